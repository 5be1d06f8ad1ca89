package ratelimit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/sluice-gw/sluice/proxy"
)

// gcra is the one atomic decision of a distributed limit: the generic cell
// rate algorithm. A key holds one number, the theoretical arrival time (TAT)
// of the next call in microseconds on Redis's clock; a call is allowed when
// TAT - now fits in the bucket (burst * interval), plus max_wait in queue
// mode, and moves TAT one interval on. It behaves exactly like a token
// bucket of the same rate and burst (the local limiter), costs one small key
// per limit key that expires once the bucket is full again, and needs no
// clock agreement between gateways (Redis's TIME is the clock).
//
// KEYS[1] the limit key; ARGV[1] interval (µs per call), ARGV[2] burst,
// ARGV[3] longest wait (µs; 0 rejects at once), ARGV[4] "1" right after a
// Redis outage: the bucket holds at most one token (TAT is at least
// now + (burst-1) * interval), because calls admitted locally during the
// outage have spent what the key shows.
// Returns {allowed, remaining, retry_after_µs, reset_µs, wait_µs}.
var gcra = redis.NewScript(`
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local maxwait = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if not tat or tat < now then tat = now end
if ARGV[4] == '1' then
  local floor = now + (burst - 1) * interval
  if tat < floor then tat = floor end
end
local newtat = tat + interval
local wait = newtat - burst * interval - now
if wait > maxwait then
  return {0, 0, math.ceil(wait), math.ceil(tat - now), 0}
end
if wait < 0 then wait = 0 end
redis.call('SET', KEYS[1], string.format('%.0f', newtat), 'PX', math.ceil((newtat - now) / 1000) + 1)
local remaining = math.floor((burst * interval - (newtat - now)) / interval)
if remaining < 0 then remaining = 0 end
return {1, remaining, 0, math.ceil(newtat - now), math.ceil(wait)}
`)

// distributed is the Redis side of one limit.
type distributed struct {
	rdb      *redis.Client
	key      string // the whole key for upstream and route limits; the prefix for keyed ones
	keyed    bool
	interval string // µs per call
	burst    int
	health   *redisHealth
}

func newDistributed(l *limit, b *proxy.Build) *distributed {
	d := &distributed{rdb: b.Cluster.Redis, burst: l.burst, health: sharedHealth(b)}
	d.interval = strconv.FormatFloat(1e6/float64(l.limit), 'f', -1, 64)
	switch l.kind {
	case keyUpstream:
		d.key = b.Cluster.Key(upstreamKey(b.Upstream.Name, l.name, l.rate, l.per, l.burst))
	case keyRoute:
		d.key = b.Cluster.Key("rl:r:" + b.Route.Name + ":" + l.name)
	default:
		d.key = b.Cluster.Key("rl:r:" + b.Route.Name + ":" + l.name + ":")
		d.keyed = true
	}
	return d
}

// upstreamKey is the Redis key (without the cluster's prefix) of an upstream
// limit: `rl:u:<upstream>:<name>:<settings>`, where settings is a short hash
// of rate, per and burst. The limit is shared by all routes of the upstream,
// and routes whose limits of the same name differ in settings must not
// share one GCRA key with different intervals (the local buckets are kept
// apart by settings too).
func upstreamKey(upstream, name string, rate float64, per time.Duration, burst int) string {
	h := fnv(fmt.Appendf(nil, "%g|%d|%d", rate, per, burst))
	return fmt.Sprintf("rl:u:%s:%s:%08x", upstream, name, h)
}

// take asks Redis; ok is false when Redis is unusable (the caller falls
// back to its local share).
// With recovering, the shared bucket counts as spent (see gcra's ARGV[4]).
func (d *distributed) take(l *limit, key []byte, maxWait time.Duration, recovering bool) (decision, bool) {
	if !d.health.usable() {
		return decision{}, false
	}
	k := d.key
	switch {
	case l.kind == keyIP && (len(key) == net.IPv4len || len(key) == net.IPv6len):
		k += net.IP(key).String()
	case d.keyed:
		k += string(key)
	}
	floor := 0
	if recovering {
		floor = 1
	}
	res, err := gcra.Run(context.Background(), d.rdb, []string{k}, d.interval, d.burst, maxWait.Microseconds(), floor).Int64Slice()
	if err != nil || len(res) != 5 {
		if err == nil {
			err = fmt.Errorf("unexpected reply %v", res)
		}
		d.health.failed(err)
		return decision{}, false
	}
	d.health.ok()
	return decision{
		ok:         res[0] == 1,
		remaining:  int(res[1]),
		retryAfter: time.Duration(res[2]) * time.Microsecond,
		reset:      time.Duration(res[3]) * time.Microsecond,
		wait:       time.Duration(res[4]) * time.Microsecond,
	}, true
}

// redisHealth tracks whether Redis answers, for every limit of a gateway.
// After an error, Redis is left alone for retryAfter (decisions are local
// meanwhile); then one call tries it again. Going down and coming back are
// logged once each.
type redisHealth struct {
	down       atomic.Bool
	downUntil  atomic.Int64 // unix nanoseconds
	probing    atomic.Bool
	outages    atomic.Int64                // outages begun: the fallback shares start empty at each
	graceUntil atomic.Int64                // proxy.Nanotime (the buckets' clock): until then Redis is just back (see limit.take)
	log        atomic.Pointer[slog.Logger] // set when a config starts (Build.OnStart), not when it is built
}

// retryRedis is how long Redis is left alone after an error.
const retryRedis = time.Second

// recoverGrace is how long after Redis answers again a gateway still keeps
// to its share as well (and floors the shared buckets): the other gateways
// find Redis back at their next probe, up to retryRedis later, and spend
// their shares until then.
const recoverGrace = 2 * retryRedis

func sharedHealth(b *proxy.Build) *redisHealth {
	return proxy.Share(b, b.Cluster, func() *redisHealth { return &redisHealth{} })
}

func (h *redisHealth) logger() *slog.Logger {
	if l := h.log.Load(); l != nil {
		return l
	}
	return slog.Default()
}

func (h *redisHealth) usable() bool {
	if !h.down.Load() {
		return true
	}
	if time.Now().UnixNano() < h.downUntil.Load() {
		return false
	}
	return h.probing.CompareAndSwap(false, true)
}

func (h *redisHealth) failed(err error) {
	h.downUntil.Store(time.Now().Add(retryRedis).UnixNano())
	if !h.down.Swap(true) {
		h.outages.Add(1)
		h.logger().Warn("rate_limit: Redis is unreachable; distributed limits fall back to each gateway's share until it answers",
			"error", err.Error(), "retry_every", retryRedis.String())
	}
	h.probing.Store(false)
}

func (h *redisHealth) ok() {
	if h.down.Load() {
		// The grace starts before down clears: no call sees neither.
		h.graceUntil.Store(proxy.Nanotime() + int64(recoverGrace))
	}
	if h.down.Load() && h.down.Swap(false) {
		h.logger().Info("rate_limit: Redis answers again; distributed limits are shared again")
	}
	h.probing.Store(false)
}

// recovering says whether decisions keep to this gateway's share at now
// (proxy.Nanotime, the clock the buckets run on): Redis is away, or
// answers again since less than recoverGrace.
func (h *redisHealth) recovering(now int64) bool {
	return h.down.Load() || now < h.graceUntil.Load()
}

func (h *redisHealth) state() string {
	if h.down.Load() {
		return "unreachable (local fallback)"
	}
	return "ok"
}

// pauseHub shares provider pauses between gateways: a pause is published on
// a channel (and kept in a key that expires with it, for gateways that
// start later); every gateway subscribes while a config with
// respect_upstream serves.
type pauseHub struct {
	cluster *proxy.Cluster
	health  *redisHealth
	channel string
	id      string // this gateway's id in messages (Cluster.NodeID is per process; tests run several gateways in one)

	mu     sync.Mutex
	pauses map[string]*pause // by upstream
	ps     *redis.PubSub
	done   chan struct{}
}

// hubLink joins an upstream's pause to the cluster's hub while a config
// that has it serves: pauses announced for the upstream extend it, and its
// own are published.
type hubLink struct {
	hub   *pauseHub
	pause *pause
}

// watchPauses shares p's pauses with the other gateways.
func watchPauses(b *proxy.Build, p *pause) {
	health := sharedHealth(b)
	hub := proxy.Share(b, b.Cluster, func() *pauseHub {
		var id [8]byte
		_, _ = rand.Read(id[:])
		return &pauseHub{cluster: b.Cluster, health: health, channel: b.Cluster.Key("rl:pause"),
			id: b.Cluster.NodeID + "." + hex.EncodeToString(id[:]), pauses: map[string]*pause{}}
	})
	link := hubLink{hub, p}
	proxy.Share(b, link, func() *hubLink { return &link })
}

// Start makes pauses announced for the upstream extend its pause, and its
// pause publish through the hub.
func (l *hubLink) Start() error {
	l.hub.mu.Lock()
	l.hub.pauses[l.pause.upstream] = l.pause
	l.hub.mu.Unlock()
	l.pause.attach(l.hub)
	return nil
}

// Close undoes Start, once no serving config has the link.
func (l *hubLink) Close() error {
	l.pause.detach(l.hub)
	l.hub.mu.Lock()
	defer l.hub.mu.Unlock()
	if l.hub.pauses[l.pause.upstream] == l.pause {
		delete(l.hub.pauses, l.pause.upstream)
	}
	return nil
}

func (h *pauseHub) pauseKey(upstream string) string { return h.cluster.Key("rl:pause:" + upstream) }

// publish tells the other gateways that upstream is paused until until.
func (h *pauseHub) publish(upstream string, until int64) {
	if !h.health.usable() {
		return
	}
	ctx := context.Background()
	ttl := time.Until(time.Unix(0, until))
	if ttl < time.Millisecond {
		return
	}
	msg := h.id + " " + strconv.FormatInt(until, 10) + " " + upstream
	_, err := h.cluster.Redis.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, h.pauseKey(upstream), until, ttl)
		p.Publish(ctx, h.channel, msg)
		return nil
	})
	if err != nil {
		h.health.failed(err)
		return
	}
	h.health.ok()
}

// Start subscribes, when the first config that needs it starts serving.
func (h *pauseHub) Start() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ps = h.cluster.Redis.Subscribe(context.Background(), h.channel)
	h.done = make(chan struct{})
	go h.listen(h.ps, h.done)
	return nil
}

// catchUp reads the pauses announced while this gateway was not listening
// (before it started, or while its subscription was down).
func (h *pauseHub) catchUp() {
	h.mu.Lock()
	pauses := make(map[string]*pause, len(h.pauses))
	for up, p := range h.pauses {
		pauses[up] = p
	}
	h.mu.Unlock()
	for up, p := range pauses {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		v, err := h.cluster.Redis.Get(ctx, h.pauseKey(up)).Int64()
		cancel()
		if err == nil {
			p.extend(min(v, time.Now().Add(maxPause).UnixNano()))
		}
	}
}

// Close ends the subscription, once the last config using it is retired.
func (h *pauseHub) Close() error {
	h.mu.Lock()
	ps, done := h.ps, h.done
	h.ps, h.done = nil, nil
	h.mu.Unlock()
	_ = ps.Close()
	<-done
	return nil
}

func (h *pauseHub) listen(ps *redis.PubSub, done chan struct{}) {
	defer close(done)
	// Subscription confirmations come on (re)connection: each is a chance
	// to have missed messages, so pauses are read from their keys then.
	for m := range ps.ChannelWithSubscriptions() {
		msg, ok := m.(*redis.Message)
		if !ok {
			if _, sub := m.(*redis.Subscription); sub {
				h.catchUp()
			}
			continue
		}
		node, rest, _ := strings.Cut(msg.Payload, " ")
		untilStr, upstream, _ := strings.Cut(rest, " ")
		if node == h.id {
			continue
		}
		until, err := strconv.ParseInt(untilStr, 10, 64)
		if err != nil {
			continue
		}
		h.mu.Lock()
		p := h.pauses[upstream]
		h.mu.Unlock()
		if p != nil {
			p.extend(min(until, time.Now().Add(maxPause).UnixNano()))
		}
	}
}
