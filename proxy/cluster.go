package proxy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/sluice-gw/sluice/proxy/config"
)

// Cluster is the state several gateways share through Redis (cluster.redis).
// A gateway has one while its config sets cluster.redis; plugins get it from
// Build.Cluster (nil in single-node mode) and must keep serving when Redis
// is unreachable: fall back to local state, log once, count it, recover.
type Cluster struct {
	// Redis is the shared client (a connection pool, safe for concurrent use).
	Redis *redis.Client
	// Prefix starts every key and channel name (cluster.redis.key_prefix).
	Prefix string
	// NodeID identifies this gateway process among the cluster's nodes
	// (random per process), e.g. to skip its own pub/sub messages.
	NodeID string

	key string // settings this client was made for (see clusterKey)

	mu     sync.Mutex
	closed bool
}

// Key returns Prefix + name.
func (c *Cluster) Key(name string) string { return c.Prefix + name }

// Ping checks Redis within timeout.
func (c *Cluster) Ping(timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return c.Redis.Ping(ctx).Err()
}

func (c *Cluster) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closed {
		c.closed = true
		_ = c.Redis.Close()
	}
}

// redisLog receives go-redis's own log lines (a failed dial per pooled
// connection attempt, for instance). During an outage those come many times
// a second; the plugins already log each change of Redis state once, so these
// go to debug level on the logger of the config last compiled.
type redisLog struct{ l atomic.Pointer[slog.Logger] }

func (r *redisLog) Printf(_ context.Context, format string, v ...any) {
	if l := r.l.Load(); l != nil {
		l.Debug("redis client", "message", fmt.Sprintf(format, v...))
	}
}

var redisLogger = func() *redisLog {
	r := &redisLog{}
	redis.SetLogger(r)
	return r
}()

var nodeID = func() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}()

func clusterKey(rc *config.RedisConfig) string {
	return fmt.Sprintf("%s|%s|%d|%s|%v|%v|%v|%d", rc.Addr, rc.Password.Reveal(), rc.DB, rc.KeyPrefix,
		rc.DialTimeout, rc.ReadTimeout, rc.WriteTimeout, rc.PoolSize)
}

// redisOptions are the client options for rc. Every limit on the time a
// request can spend on Redis is here (or on the command's context, when it
// has a shorter deadline): one dial attempt of dial_timeout (go-redis
// would otherwise make DialerRetries=5 attempts with 100ms between them, 405ms
// against a refusing Redis and 1.4s against one that drops packets, for the
// request that happens to dial), no command retries, short reads and writes.
// A failed dial or command falls back at once; the plugins decide what to do.
func redisOptions(rc *config.RedisConfig) *redis.Options {
	pool := rc.PoolSize
	if pool == 0 {
		pool = 10 * runtime.GOMAXPROCS(0)
	}
	return &redis.Options{
		Addr:            rc.Addr,
		Password:        rc.Password.Reveal(),
		DB:              rc.DB,
		DialTimeout:     rc.DialTimeout.D(),
		DialerRetries:   1, // attempts in all (0 means go-redis's default of 5)
		ReadTimeout:     rc.ReadTimeout.D(),
		WriteTimeout:    rc.WriteTimeout.D(),
		PoolSize:        pool,
		MaxRetries:      -1, // a failed command falls back at once; plugins decide
		DisableIdentity: true,
		// A deadline on a command's context bounds its reads and writes too
		// (without it go-redis waits read_timeout whatever the context says):
		// the cache's shared tier gives each lookup less than read_timeout.
		// Commands without a deadline keep read_timeout and write_timeout.
		ContextTimeoutEnabled: true,
	}
}

// newCluster makes the Redis client for rc. It does not connect: go-redis
// dials on first use, and a Redis that is down at start is the plugins'
// fallback case, not a config error.
func newCluster(rc *config.RedisConfig) *Cluster {
	return &Cluster{
		Redis:  redis.NewClient(redisOptions(rc)),
		Prefix: rc.KeyPrefix,
		NodeID: nodeID,
		key:    clusterKey(rc),
	}
}

// clusterFor returns the cluster for cfg: the current one when its settings
// did not change (connections stay warm across reloads), a new one when they
// did, nil in single-node mode.
func clusterFor(cfg *config.Config, current *Cluster, log *slog.Logger) *Cluster {
	rc := cfg.Cluster.Redis
	if rc == nil || rc.Addr == "" {
		return nil
	}
	redisLogger.l.Store(log)
	if current != nil && current.key == clusterKey(rc) {
		return current
	}
	return newCluster(rc)
}
