package proxy

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Connection deadlines without a runtime timer per set.
//
// fasthttp's server sets a caller connection's read deadline twice per
// request (the idle wait, then the read timeout from the first byte) and its
// write deadline once; an upstream attempt sets a write and a read deadline.
// Each set re-arms a runtime timer: a clock read, the P's timer-heap lock and
// a heap fix-up, ~675 instructions, ~3,400 per proxied request (callgrind,
// BenchmarkPassThrough), about a tenth of the gateway's own work. nginx keeps
// its timers in one tree and looks at them between events; the gateway does
// the same at a coarser grain. A set far enough ahead is one atomic swap on
// the connection. One sweeper goroutine per process looks at the open
// connections every deadlineTick and, for each deadline that has passed,
// sets a real deadline in the past on the socket, which ends a blocked read
// or write exactly as the runtime's timer would have (os.ErrDeadlineExceeded,
// a net.Error whose Timeout is true).
//
// So a deadline fires up to one tick (plus scheduling) late. A deadline within
// nearDeadline of now, or past, is set on the socket at once: code that
// interrupts a read with SetReadDeadline(time.Now()), and short timeouts,
// get exactly what they ask for.
const (
	deadlineTick = 10 * time.Millisecond
	nearDeadline = 3 * deadlineTick
)

// deadlineBase is the origin of the lazy deadlines' clock: monotonic
// nanoseconds since the process started (time.Sub uses the monotonic
// readings of both times when they have one). deadlineBaseNano is the same
// instant on the runtime's monotonic clock, the one time.Now reads for its
// monotonic part: "now" on this clock is one nanotime read, where
// time.Since would add the arithmetic of time.Time (~40 instructions a set).
var (
	deadlineBase     = time.Now()
	deadlineBaseNano = nanotime()
)

// sinceDeadlineBase is now, in ns since deadlineBase.
func sinceDeadlineBase() int64 { return nanotime() - deadlineBaseNano }

// deadlineFired marks a lazy deadline whose real one the sweeper has set.
const deadlineFired = -1

// pastDeadline is the real deadline that ends a blocked call at once.
var pastDeadline = time.Unix(1, 0)

// lazyDeadline is one direction of a connection.
type lazyDeadline struct {
	// at is when it passes, in ns since deadlineBase; 0: none; deadlineFired.
	at atomic.Int64
	// real says a real deadline is set on the socket (an exact set, or the
	// sweeper's): the next lazy set must clear it first.
	real atomic.Bool
}

// lazyDeadlines are a connection's read and write deadlines. Embedded in the
// gateway's connection wrappers (edgeConn, upstreamConn), which register with
// the sweeper when they open and leave it when they close.
type lazyDeadlines struct {
	mu      sync.Mutex // held while a real deadline is set
	rd, wd  lazyDeadline
	conn    net.Conn    // the socket's own deadlines
	watched atomic.Bool // in the sweeper's list (else every set is exact)
	slot    int         // index in the sweeper's list (under sweep.mu)
}

func (d *lazyDeadlines) setRead(t time.Time) error  { return d.set(&d.rd, t) }
func (d *lazyDeadlines) setWrite(t time.Time) error { return d.set(&d.wd, t) }
func (d *lazyDeadlines) setBoth(t time.Time) error {
	err := d.set(&d.rd, t)
	if werr := d.set(&d.wd, t); err == nil {
		err = werr
	}
	return err
}

// setReal sets the socket's deadline of direction ld (d.mu held).
func (d *lazyDeadlines) setReal(ld *lazyDeadline, t time.Time) error {
	if ld == &d.rd {
		return d.conn.SetReadDeadline(t)
	}
	return d.conn.SetWriteDeadline(t)
}

func (d *lazyDeadlines) set(ld *lazyDeadline, t time.Time) error {
	var at int64 // none
	if !t.IsZero() {
		at = int64(t.Sub(deadlineBase))
		if at <= sinceDeadlineBase()+int64(nearDeadline) || !d.watched.Load() {
			// Near, past, or a connection the sweeper does not watch
			// (closed): exactly, on the socket.
			d.mu.Lock()
			ld.at.Store(0) // a sweep that saw the old one does not fire now
			ld.real.Store(true)
			err := d.setReal(ld, t)
			d.mu.Unlock()
			return err
		}
	}
	// The swap and the sweeper's compare-and-swap decide who was first: a
	// sweep that read the old value does not fire once it is replaced, and
	// a swap that finds it fired clears the real deadline the sweep set
	// (under mu: after the sweep is done with it).
	if old := ld.at.Swap(at); old == deadlineFired || ld.real.Load() {
		d.mu.Lock()
		var err error
		if ld.real.Load() {
			err = d.setReal(ld, time.Time{})
			ld.real.Store(false)
		}
		d.mu.Unlock()
		return err
	}
	return nil
}

// fire sets the real deadline of ld in the past if its lazy one passed
// before now (ns since deadlineBase).
func (d *lazyDeadlines) fire(ld *lazyDeadline, now int64) {
	at := ld.at.Load()
	if at <= 0 || at > now {
		return
	}
	d.mu.Lock()
	if ld.at.CompareAndSwap(at, deadlineFired) {
		ld.real.Store(true)
		_ = d.setReal(ld, pastDeadline)
	}
	d.mu.Unlock()
}

// The sweeper: one goroutine for the process while any connection is
// watched; it ends when the last one leaves (so tests that check for leaked
// goroutines see none once their connections are closed).
var sweep struct {
	mu      sync.Mutex
	conns   []*lazyDeadlines
	running bool
}

// watch registers d (its conn set) with the sweeper.
func (d *lazyDeadlines) watch(c net.Conn) {
	d.conn = c
	sweep.mu.Lock()
	d.slot = len(sweep.conns)
	sweep.conns = append(sweep.conns, d)
	d.watched.Store(true)
	if !sweep.running {
		sweep.running = true
		go sweeper()
	}
	sweep.mu.Unlock()
}

// unwatch removes d from the sweeper; its deadlines are exact from then on.
func (d *lazyDeadlines) unwatch() {
	sweep.mu.Lock()
	if d.watched.Load() {
		i, last := d.slot, len(sweep.conns)-1
		sweep.conns[i] = sweep.conns[last]
		sweep.conns[i].slot = i
		sweep.conns[last] = nil
		sweep.conns = sweep.conns[:last]
		d.watched.Store(false)
	}
	sweep.mu.Unlock()
}

func sweeper() {
	t := time.NewTicker(deadlineTick)
	defer t.Stop()
	for range t.C {
		now := sinceDeadlineBase()
		sweep.mu.Lock()
		if len(sweep.conns) == 0 {
			sweep.running = false
			sweep.mu.Unlock()
			return
		}
		for _, d := range sweep.conns {
			d.fire(&d.rd, now)
			d.fire(&d.wd, now)
		}
		sweep.mu.Unlock()
	}
}
