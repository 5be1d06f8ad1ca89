package proxy

import (
	"errors"
	"os"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// An attempt whose timeout was what was left of the call's deadline, and
// that timed out connecting, is the deadline's 504 (upstream_timeout), not
// 502 upstream_unreachable: TestCollapsedWaitIsBoundedByTheDeadline
// (plugins/cache) saw the 502 when a collapsed waiter had a millisecond left
// to connect on a busy machine.
func TestCutByDeadline(t *testing.T) {
	passed := &Exchange{deadline: nanotime() - int64(time.Millisecond)}
	ahead := &Exchange{deadline: nanotime() + int64(time.Hour)}
	none := &Exchange{}
	readTimeout := os.ErrDeadlineExceeded
	for _, c := range []struct {
		name string
		ex   *Exchange
		err  error
		want bool
	}{
		{"dial timeout, deadline passed", passed, fasthttp.ErrDialTimeout, true},
		{"read timeout, deadline passed", passed, readTimeout, true},
		{"dial timeout, deadline ahead", ahead, fasthttp.ErrDialTimeout, false},
		{"dial timeout, no deadline", none, fasthttp.ErrDialTimeout, false},
		{"refused, deadline passed", passed, errors.New("connection refused"), false},
	} {
		if got := cutByDeadline(c.ex, c.err); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
	if e := Classify(&transportError{fasthttp.ErrDialTimeout}); e.Code != CodeUpstreamUnreachable {
		t.Fatalf("a dial timeout on its own is %v, want upstream_unreachable", e.Code)
	}
	if errDeadline.Code != CodeUpstreamTimeout || errDeadline.Code.Status() != 504 {
		t.Fatalf("errDeadline is %v", errDeadline.Code)
	}
}
