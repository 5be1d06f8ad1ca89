package ratelimit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/sluice-gw/sluice/proxy"
)

// presence counts the gateways of a cluster (nodes: 0, the default): each
// gateway whose config has a distributed limit writes a heartbeat into one
// sorted set every beatEvery; members silent for goneAfter are dropped. The
// count sets each gateway's share of a limit while Redis is away; it cannot
// change during an outage (it is the count last seen).
type presence struct {
	cluster *proxy.Cluster
	key     string
	id      string
	live    atomic.Int64 // gateways counted, at least 1

	stop chan struct{}
	done chan struct{}
}

const (
	beatEvery = time.Second
	goneAfter = 5 * time.Second
)

func sharedPresence(b *proxy.Build) *presence {
	return proxy.Share(b, b.Cluster, func() *presence {
		var id [8]byte
		_, _ = rand.Read(id[:])
		p := &presence{cluster: b.Cluster, key: b.Cluster.Key("rl:nodes"), id: b.Cluster.NodeID + "." + hex.EncodeToString(id[:])}
		p.live.Store(1)
		return p
	})
}

// Start starts the heartbeat when the first config that needs it starts
// serving; the first beat is sent at once so that the count is known before
// traffic.
func (p *presence) Start() error {
	p.beat()
	p.stop, p.done = make(chan struct{}), make(chan struct{})
	go p.run(p.stop, p.done)
	return nil
}

// Close stops the heartbeat once the last config using it is retired, and
// leaves the set so that the others count one gateway less at once.
func (p *presence) Close() error {
	close(p.stop)
	<-p.done
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_ = p.cluster.Redis.ZRem(ctx, p.key, p.id).Err() // best effort: the member expires anyway
	return nil
}

func (p *presence) run(stop, done chan struct{}) {
	defer close(done)
	t := time.NewTicker(beatEvery)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			p.beat()
		}
	}
}

// beat announces this gateway and counts the live ones; on error the last
// count stays.
func (p *presence) beat() {
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	now := time.Now()
	var card *redis.IntCmd
	_, err := p.cluster.Redis.TxPipelined(ctx, func(pl redis.Pipeliner) error {
		pl.ZAdd(ctx, p.key, redis.Z{Score: float64(now.UnixMilli()), Member: p.id})
		pl.ZRemRangeByScore(ctx, p.key, "-inf", fmt.Sprint(now.Add(-goneAfter).UnixMilli()))
		card = pl.ZCard(ctx, p.key)
		pl.PExpire(ctx, p.key, 2*goneAfter)
		return nil
	})
	if err == nil {
		p.live.Store(max(1, card.Val()))
	}
}

// autoShare is the fallback of a distributed limit: buckets with rate/n and
// burst/n for n gateways (nodes, or the live count with nodes: 0), made
// again, empty, when n changes or a new Redis outage begins.
type autoShare struct {
	presence *presence // nil: n is nodes
	nodes    int
	health   *redisHealth
	make     func(n int, now int64) buckets
	cur      atomic.Pointer[shareBuckets]
}

type shareBuckets struct {
	n      int
	outage int64 // redisHealth.outages when made
	buckets
}

// get returns the share's buckets at now, made again if n or the outage
// changed.
func (a *autoShare) get(now int64) *buckets {
	n := a.nodes
	if a.presence != nil {
		n = int(a.presence.live.Load())
	}
	outage := a.health.outages.Load()
	cur := a.cur.Load()
	if cur == nil || cur.n != n || cur.outage != outage {
		next := &shareBuckets{n: n, outage: outage, buckets: a.make(n, now)}
		if a.cur.CompareAndSwap(cur, next) {
			cur = next
		} else {
			cur = a.cur.Load()
		}
	}
	return &cur.buckets
}
