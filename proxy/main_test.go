package proxy_test

import (
	"fmt"
	"os"
	"testing"

	"github.com/sluice-gw/sluice/proxy/proxytest"
	"go.uber.org/goleak"
)

// TestMain fails the package if its tests leave goroutines behind: every
// gateway, upstream, admin server and retire loop a test starts must be gone
// at the end.
func TestMain(m *testing.M) {
	code := m.Run()
	proxytest.Client.CloseIdleConnections()
	if code == 0 {
		if err := goleak.Find(
			// process-wide by design: fasthttp's coarse clock and the shared
			// DNS cache cleaner. Bounded: the idle-worker reaper of a fasthttp
			// server and the idle-connection cleaner of a closed pool notice
			// only after their sleep (up to 10s) that they are done.
			goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.updateServerDate.func1"),
			goleak.IgnoreTopFunction("github.com/valyala/fasthttp.(*TCPDialer).tcpAddrsClean"),
			goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*workerPool).Start.func2"),
			goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*HostClient).connsCleaner"),
		); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}
