package idempotency

import (
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/sluice-gw/sluice/proxy"
	"github.com/valyala/fasthttp"
)

// answer is a stored response: status, headers, body.
type answer struct {
	status int
	header [][2]string
	body   []byte
}

// Headers a replay does not repeat: the gateway sets them per answer.
var skipHeaders = []string{"Content-Length", "Date", "Connection", "Transfer-Encoding", "X-Request-Id", "Keep-Alive"}

func capture(resp *fasthttp.Response) *answer {
	a := &answer{status: resp.StatusCode(), body: append([]byte(nil), resp.Body()...)}
	for k, v := range resp.Header.All() {
		name := string(k)
		skip := false
		for _, s := range skipHeaders {
			skip = skip || strings.EqualFold(s, name)
		}
		if !skip {
			a.header = append(a.header, [2]string{name, string(v)})
		}
	}
	return a
}

var (
	strReplayed = []byte("Idempotent-Replayed")
	strTrue     = []byte("true")
)

// write puts the stored answer in ctx.Response, marked as a replay.
func (a *answer) write(ctx *fasthttp.RequestCtx) {
	resp := &ctx.Response
	resp.Reset()
	resp.SetStatusCode(a.status)
	for _, h := range a.header {
		resp.Header.Add(h[0], h[1])
	}
	resp.Header.SetBytesKV(strReplayed, strTrue)
	resp.SetBody(a.body)
}

// encode writes the answer for Redis: status, header count, then
// length-prefixed names, values and the body.
func (a *answer) encode(fp [32]byte) []byte {
	b := append(make([]byte, 0, 64+len(a.body)), 'D')
	b = append(b, fp[:]...)
	b = binary.AppendUvarint(b, uint64(a.status))
	b = binary.AppendUvarint(b, uint64(len(a.header)))
	for _, h := range a.header {
		b = binary.AppendUvarint(b, uint64(len(h[0])))
		b = append(b, h[0]...)
		b = binary.AppendUvarint(b, uint64(len(h[1])))
		b = append(b, h[1]...)
	}
	return append(b, a.body...)
}

var errCorrupt = errors.New("idempotency: stored answer is corrupt")

// decodeAnswer reads what encode wrote (after the 'D' and fingerprint).
func decodeAnswer(b []byte) (*answer, error) {
	a := &answer{}
	next := func() (uint64, bool) {
		v, n := binary.Uvarint(b)
		if n <= 0 {
			return 0, false
		}
		b = b[n:]
		return v, true
	}
	str := func() (string, bool) {
		l, ok := next()
		if !ok || l > uint64(len(b)) {
			return "", false
		}
		s := string(b[:l])
		b = b[l:]
		return s, true
	}
	status, ok := next()
	if !ok || status < 100 || status > 999 {
		return nil, errCorrupt
	}
	a.status = int(status)
	n, ok := next()
	if !ok || n > uint64(len(b)) {
		return nil, errCorrupt
	}
	for range n {
		k, ok1 := str()
		v, ok2 := str()
		if !ok1 || !ok2 {
			return nil, errCorrupt
		}
		a.header = append(a.header, [2]string{k, v})
	}
	a.body = b
	return a, nil
}

type state uint8

const (
	stateAcquired state = iota // no entry: this call serves the key
	stateStored                // an answer for the same request is stored
	stateInFlight              // the same request is being served
	stateMismatch              // the key was used with another request
)

var errFull = errors.New("idempotency: the in-process store is full")

// store keeps keys and answers.
type store interface {
	begin(key string, fp [32]byte, lockTTL time.Duration) (state, *answer, error)
	complete(key string, fp [32]byte, a *answer, ttl time.Duration) error
	release(key string)
	// wait blocks until key is no longer in flight or until deadline; false
	// when the deadline came first.
	wait(key string, deadline time.Time) bool
}

// memStore is the in-process store, shared by every route of a gateway.
type memStore struct {
	mu  sync.Mutex
	m   map[string]*entry
	max atomic.Int64
}

type entry struct {
	fp      [32]byte
	ans     *answer
	done    chan struct{}
	expires time.Time
}

func newMemStore() *memStore { return &memStore{m: map[string]*entry{}} }

func (s *memStore) setMax(n int) {
	if cur := s.max.Load(); int64(n) > cur {
		s.max.Store(int64(n))
	}
}

func (s *memStore) begin(key string, fp [32]byte, lockTTL time.Duration) (state, *answer, error) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.m[key]
	if e != nil && now.After(e.expires) {
		s.drop(key, e)
		e = nil
	}
	if e == nil {
		if int64(len(s.m)) >= s.max.Load() {
			s.sweep(now)
			if int64(len(s.m)) >= s.max.Load() {
				return 0, nil, errFull
			}
		}
		s.m[key] = &entry{fp: fp, done: make(chan struct{}), expires: now.Add(lockTTL)}
		return stateAcquired, nil, nil
	}
	switch {
	case e.fp != fp:
		return stateMismatch, nil, nil
	case e.ans != nil:
		return stateStored, e.ans, nil
	}
	return stateInFlight, nil, nil
}

func (s *memStore) drop(key string, e *entry) {
	delete(s.m, key)
	if e.ans == nil {
		close(e.done)
	}
}

// sweep drops the expired entries; called with mu held, when full.
func (s *memStore) sweep(now time.Time) {
	for k, e := range s.m {
		if now.After(e.expires) {
			s.drop(k, e)
		}
	}
}

func (s *memStore) complete(key string, fp [32]byte, a *answer, ttl time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.m[key]; e != nil && e.ans == nil && e.fp == fp {
		e.ans, e.expires = a, time.Now().Add(ttl)
		close(e.done)
	}
	return nil
}

func (s *memStore) release(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.m[key]; e != nil && e.ans == nil {
		s.drop(key, e)
	}
}

func (s *memStore) wait(key string, deadline time.Time) bool {
	s.mu.Lock()
	e := s.m[key]
	done := e == nil || e.ans != nil
	s.mu.Unlock()
	if done {
		return true
	}
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-e.done:
		return true
	case <-t.C:
		return false
	}
}

// redisStore keeps keys and answers in Redis (cluster mode), so that any
// gateway of the cluster replays an answer. A key holds 'P' + fingerprint
// while in flight (SET NX with in_flight_timeout) and 'D' + fingerprint +
// the answer once done (with ttl).
type redisStore struct {
	c      *proxy.Cluster
	warned *atomic.Bool
	log    *slog.Logger
}

const redisTimeout = 200 * time.Millisecond

func (s *redisStore) fail(err error) error {
	if s.warned.CompareAndSwap(false, true) {
		s.log.Warn("idempotency: Redis is unreachable; keyed calls go through without de-duplication until it answers",
			"error", err.Error())
	}
	return err
}

func (s *redisStore) ok() {
	if s.warned.CompareAndSwap(true, false) {
		s.log.Info("idempotency: Redis answers again; keyed calls are de-duplicated again")
	}
}

func (s *redisStore) begin(key string, fp [32]byte, lockTTL time.Duration) (state, *answer, error) {
	ctx, cancel := context.WithTimeout(context.Background(), redisTimeout)
	defer cancel()
	k := s.c.Key(key)
	for range 2 {
		set, err := s.c.Redis.SetNX(ctx, k, append([]byte{'P'}, fp[:]...), lockTTL).Result()
		if err != nil {
			return 0, nil, s.fail(err)
		}
		if set {
			s.ok()
			return stateAcquired, nil, nil
		}
		v, err := s.c.Redis.Get(ctx, k).Bytes()
		if errors.Is(err, redis.Nil) {
			continue // expired or released in between: try to take it again
		}
		if err != nil {
			return 0, nil, s.fail(err)
		}
		s.ok()
		if len(v) < 33 || [32]byte(v[1:33]) != fp {
			return stateMismatch, nil, nil
		}
		if v[0] == 'P' {
			return stateInFlight, nil, nil
		}
		a, err := decodeAnswer(v[33:])
		if err != nil {
			return 0, nil, s.fail(err)
		}
		return stateStored, a, nil
	}
	return stateInFlight, nil, nil
}

func (s *redisStore) complete(key string, fp [32]byte, a *answer, ttl time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), redisTimeout)
	defer cancel()
	if err := s.c.Redis.Set(ctx, s.c.Key(key), a.encode(fp), ttl).Err(); err != nil {
		return s.fail(err)
	}
	return nil
}

func (s *redisStore) release(key string) {
	ctx, cancel := context.WithTimeout(context.Background(), redisTimeout)
	defer cancel()
	// Only an in-flight mark is removed, never a stored answer.
	k := s.c.Key(key)
	if v, err := s.c.Redis.Get(ctx, k).Bytes(); err == nil && len(v) > 0 && v[0] == 'P' {
		s.c.Redis.Del(ctx, k)
	}
}

// wait polls until the key is no longer in flight or the deadline passes.
func (s *redisStore) wait(key string, deadline time.Time) bool {
	k := s.c.Key(key)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), redisTimeout)
		v, err := s.c.Redis.Get(ctx, k).Bytes()
		cancel()
		if err != nil || len(v) == 0 || v[0] != 'P' {
			return true
		}
		time.Sleep(min(50*time.Millisecond, time.Until(deadline)))
	}
	return false
}
