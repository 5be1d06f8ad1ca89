package cache

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/sluice-gw/sluice/proxy"
)

// subscriber links a store to the cluster: it publishes local
// invalidations on cluster.Key("cache:invalidate") and applies the other
// gateways'. One runs per process and cluster client, while at least one
// started cache plugin uses it.
type subscriber struct {
	cluster *proxy.Cluster
	store   *Store
	channel string
	self    string // NodeID plus this store: gateways of one process tell each other apart

	mu      sync.Mutex
	ps      *redis.PubSub
	cancel  context.CancelFunc
	done    chan struct{} // closed when run has returned
	pubDone chan struct{} // closed when the publisher has returned
	out     chan []byte   // messages waiting to be published
	dropped atomic.Bool   // a full queue was logged
}

// message is what travels on the channel.
type message struct {
	Node string       `json:"node"`
	Inv  Invalidation `json:"inv"`
}

func newSubscriber(c *proxy.Cluster, s *Store) *subscriber {
	return &subscriber{cluster: c, store: s, channel: c.Key("cache:invalidate"),
		self: fmt.Sprintf("%s/%p", c.NodeID, s)}
}

// Start starts the subscription, when the first config that uses it starts
// serving (see proxy.Share).
func (sb *subscriber) Start() error {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	sb.cancel, sb.done, sb.pubDone = cancel, make(chan struct{}), make(chan struct{})
	sb.out = make(chan []byte, 1024)
	sb.ps = sb.cluster.Redis.Subscribe(ctx)
	go sb.run(ctx, sb.ps, sb.done)
	go sb.publisher(ctx, sb.out, sb.pubDone)
	sb.store.pubMu.Lock()
	sb.store.pub = sb
	sb.store.pubMu.Unlock()
	return nil
}

// Close stops it, once the last config that used it is retired.
func (sb *subscriber) Close() error {
	sb.mu.Lock()
	cancel, done, pubDone, ps := sb.cancel, sb.done, sb.pubDone, sb.ps
	sb.mu.Unlock()
	sb.store.pubMu.Lock()
	if sb.store.pub == sb {
		sb.store.pub = nil
	}
	sb.store.pubMu.Unlock()
	cancel()
	// A receive in progress waits on the socket, not on ctx: closing the
	// subscription ends it now rather than at its 5s timeout.
	_ = ps.Close()
	<-done
	<-pubDone
	return nil
}

// run receives until ctx ends. A subscription that was lost (Redis down,
// connection broken) and comes back means invalidations may have been
// missed: the whole local cache is dropped.
func (sb *subscriber) run(ctx context.Context, ps *redis.PubSub, done chan struct{}) {
	defer close(done)
	defer ps.Close()
	log := sb.store.logger()
	subscribed, lost := false, false
	backoff := 50 * time.Millisecond
	for ctx.Err() == nil {
		if !subscribed {
			if err := ps.Subscribe(ctx, sb.channel); err != nil {
				if !lost {
					log.Warn("cache: cannot subscribe to cluster invalidations; serving local cache", "error", err.Error())
				}
				lost = true
				sleep(ctx, backoff)
				backoff = min(backoff*2, 2*time.Second)
				continue
			}
			subscribed = true
		}
		msg, err := ps.ReceiveTimeout(ctx, 5*time.Second)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if isTimeout(err) {
				// quiet channel: check the link is alive
				if perr := ps.Ping(ctx); perr == nil {
					continue
				}
			}
			if !lost {
				log.Warn("cache: lost the cluster invalidation channel; the local cache will be dropped when it comes back", "error", err.Error())
			}
			lost = true
			sleep(ctx, backoff)
			backoff = min(backoff*2, 2*time.Second)
			continue
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			backoff = 50 * time.Millisecond
			if m.Kind == "subscribe" && lost {
				lost = false
				n := sb.store.apply(&Invalidation{All: true})
				sb.store.m.invalidation("resync")
				runHooks(Invalidation{Source: "resync", All: true, Remote: true})
				log.Warn("cache: cluster invalidation channel back; dropped the local cache", "entries", n)
			}
		case *redis.Message:
			var in message
			if json.Unmarshal([]byte(m.Payload), &in) != nil || in.Node == sb.self {
				continue
			}
			in.Inv.Remote = true
			sb.store.invalidate(in.Inv)
		}
	}
}

// publish queues a local invalidation for the other gateways; requests
// never wait for Redis. When the queue is full (Redis slow or down) the
// message is dropped and logged: the peers' subscriptions are broken too
// and they resync.
func (sb *subscriber) publish(inv *Invalidation) {
	b, err := json.Marshal(message{Node: sb.self, Inv: *inv})
	if err != nil {
		return
	}
	sb.mu.Lock()
	out := sb.out
	sb.mu.Unlock()
	if out == nil {
		return
	}
	select {
	case out <- b:
	default:
		if sb.dropped.CompareAndSwap(false, true) {
			sb.store.logger().Warn("cache: cluster invalidation queue full; dropping invalidations for the other gateways")
		}
	}
}

// publisher sends queued messages until ctx ends.
func (sb *subscriber) publisher(ctx context.Context, out chan []byte, done chan struct{}) {
	defer close(done)
	for {
		select {
		case <-ctx.Done():
			return
		case b := <-out:
			pctx, cancel := context.WithTimeout(ctx, time.Second)
			err := sb.cluster.Redis.Publish(pctx, sb.channel, b).Err()
			cancel()
			if err != nil && ctx.Err() == nil {
				sb.store.logger().Warn("cache: cannot publish an invalidation to the cluster", "error", err.Error())
			} else if err == nil {
				sb.dropped.Store(false)
			}
		}
	}
}

func isTimeout(err error) bool {
	type timeout interface{ Timeout() bool }
	t, ok := err.(timeout)
	return ok && t.Timeout()
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
