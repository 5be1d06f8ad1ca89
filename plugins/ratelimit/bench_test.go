package ratelimit

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// BenchmarkLocalDecision is the fast path of one limit: a token taken from
// a bucket, with the numbers for the RateLimit field.
func BenchmarkLocalDecision(b *testing.B) {
	p, tb := newPace(1e9, 1e9), new(tokenBucket)
	b.ReportAllocs()
	for b.Loop() {
		if d := p.take(tb, clock(), 0); !d.ok {
			b.Fatal("refused")
		}
	}
}

// BenchmarkSharedBucket is BenchmarkLocalDecision from all cores at once on
// one bucket, as an upstream limit is on a busy gateway.
func BenchmarkSharedBucket(b *testing.B) {
	p, tb := newPace(1e9, 1e9), new(tokenBucket)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if d := p.take(tb, clock(), 0); !d.ok {
				b.Error("refused")
				return
			}
		}
	})
}

// BenchmarkKeyedDecision looks an existing key up in a table and decides,
// from all cores at once.
func BenchmarkKeyedDecision(b *testing.B) {
	t := newTable(newPace(1e9, 1e9), 100000, time.Minute)
	keys := make([][]byte, 1024)
	for i := range keys {
		keys[i] = fmt.Appendf(nil, "consumer-%d", i)
		t.get(keys[i], clock())
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			now := clock()
			if d := t.pace.take(t.get(keys[i%len(keys)], now), now, 0); !d.ok {
				b.Error("refused")
				return
			}
			i++
		}
	})
}

// BenchmarkRedisDecision is one distributed decision (the GCRA script) on a
// real redis-server over loopback; it reports the p50 and p99 latency.
func BenchmarkRedisDecision(b *testing.B) {
	addr := startRedis(b)
	rdb := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, ReadTimeout: 100 * time.Millisecond,
		WriteTimeout: 100 * time.Millisecond, DisableIdentity: true})
	defer rdb.Close()
	d := &distributed{rdb: rdb, key: "bench:rl:u:api:upstream", interval: "0.001", burst: 1 << 30, health: &redisHealth{}}
	l := &limit{}
	for i := 0; rdb.Ping(context.Background()).Err() != nil; i++ {
		if i > 200 {
			b.Fatal("redis-server does not answer")
		}
		time.Sleep(20 * time.Millisecond)
	}
	lat := make([]time.Duration, 0, 1<<16)
	b.ReportAllocs()
	for b.Loop() {
		start := time.Now()
		dec, ok := d.take(l, nil, 0, false)
		if len(lat) < cap(lat) {
			lat = append(lat, time.Since(start))
		}
		if !ok || !dec.ok {
			b.Fatalf("ok=%v decision=%+v", ok, dec)
		}
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds())/1e3, "p99-µs")
}

// startRedis runs redis-server on a free loopback port for the benchmark
// (testkit.StartRedis cannot be imported here: testkit imports the
// plugins).
func startRedis(b *testing.B) string {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		b.Skip("redis-server is not installed")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	_, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command(bin, "--bind", "127.0.0.1", "--port", port, "--save", "", "--appendonly", "no")
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return addr
}
