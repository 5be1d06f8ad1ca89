package cache

import (
	"sync/atomic"

	"github.com/sluice-gw/sluice/proxy"
	"github.com/valyala/fasthttp"
)

// Streamed answers. A fill registers a streamFill on the exchange
// (proxy.Exchange.TeeStream) before it calls the upstream. When the answer
// comes back streamed and its head allows storing (the same rules as an
// answer read whole, storeAnswer with dry), the fill arms it: the body's
// bytes are copied into a buffer as they go to the caller, up to
// max_entry_size. If the stream ends complete within that size the entry is
// stored as storeResponse would have stored it whole: same key, freshness
// (counted from the stream's end, as a whole answer's is from its end),
// tags, vary handling, invalidation check and shared-tier write. A stream
// that goes over max_entry_size drops its buffer at once and stores
// nothing; so does one that ends early (any outcome but complete).
//
// Event streams (proxy.IsEventType) are never stored, nor is an answer
// whose Content-Length is already over max_entry_size (no buffer at all).
//
// Collapsed requests: the fill's flight ends when the head has gone to the
// caller, as for any fill; the callers that waited on it find nothing
// stored yet and go to the provider on their own (as they did before
// streams were stored). None waits for the stream's end. The shared tier's
// fill lock (cluster) is held until the stream ends, so that other
// gateways waiting on it find the entry; they wait at most as long as the
// lock lasts (the route's deadline, capped), then fetch.

// teeHighWater is the largest buffer a streamFill has held (its capacity),
// for the memory-bound test.
var teeHighWater atomic.Int64

// streamFill copies a streamed answer for the cache.
type streamFill struct {
	c     *Plugin
	armed bool // the head allows storing: keep the bytes
	over  bool // the body went over max_entry_size (or is not wanted)
	limit int
	buf   []byte

	// Set when armed: what storing needs once the exchange is gone. ctx
	// stays valid until the answer has been written (the stream ends
	// before the server lets go of it).
	ctx   *fasthttp.RequestCtx
	path  []byte
	kb    *keyBuf // the fill's keys (a copy of its own)
	gen   uint64  // the store's generation when the fetch began
	st    fillState
	ownCS []byte // the Cache-Status line the fill added to the head
}

// arm starts keeping the body of the streamed answer in ctx.Response when
// the head allows storing it; st's fill lock passes to the stream.
func (t *streamFill) arm(ctx *fasthttp.RequestCtx, ex *proxy.Exchange, kb *keyBuf, gen uint64, st *fillState) bool {
	c := t.c
	h := &ctx.Response.Header
	cl := h.ContentLength()
	if !ex.FromUpstream || proxy.IsEventType(h.ContentType()) || cl > c.maxEntry {
		return false
	}
	if !c.storeAnswer(ctx, ex.Path(), kb, nil, nil, true) {
		return false
	}
	t.armed, t.limit = true, c.maxEntry
	t.ctx = ctx
	t.path = append([]byte(nil), ex.Path()...)
	nk := keyPool.Get().(*keyBuf)
	nk.key = append(nk.key[:0], kb.key...)
	nk.uri = append(nk.uri[:0], kb.uri...)
	nk.callerCred = kb.callerCred
	t.kb = nk
	t.gen = gen
	if st != nil {
		t.st = *st
		st.token = "" // the stream's end releases the lock
	}
	if cl > 0 {
		t.grow(cl)
	}
	return true
}

// grow makes room for n bytes in all, at most limit.
func (t *streamFill) grow(n int) {
	if n <= cap(t.buf) {
		return
	}
	n = min(max(n, 2*cap(t.buf), 64<<10), t.limit)
	nb := make([]byte, len(t.buf), n)
	copy(nb, t.buf)
	t.buf = nb
	for {
		old := teeHighWater.Load()
		if int64(n) <= old || teeHighWater.CompareAndSwap(old, int64(n)) {
			break
		}
	}
}

// StreamBody keeps p while the body stays within max_entry_size.
func (t *streamFill) StreamBody(p []byte) {
	if !t.armed || t.over {
		return
	}
	if len(t.buf)+len(p) > t.limit {
		t.over, t.buf = true, nil // too large to store: let it go now
		return
	}
	t.grow(len(t.buf) + len(p))
	t.buf = append(t.buf, p...)
}

// StreamEnd stores the entry when the stream ended complete within
// max_entry_size, and releases what the fill held.
func (t *streamFill) StreamEnd(complete bool) {
	if !t.armed {
		return // a stream a retry discarded before the answer was chosen
	}
	c := t.c
	if complete && !t.over {
		stored := c.storeAnswer(t.ctx, t.path, t.kb, t.buf, t.ownCS, false)
		if stored {
			c.publishShared(t.ctx, t.kb, &t.st)
		}
	}
	if c.l2 != nil {
		c.unlockFill(&t.st)
	}
	keyPool.Put(t.kb)
	*t = streamFill{}
}
