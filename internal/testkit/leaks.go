package testkit

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"
)

// RunWithoutLeaks is a TestMain body: it runs the package's tests and fails
// the package if they leave goroutines behind. Every gateway, upstream, admin
// server, background refresher and retire loop a test starts must be gone.
func RunWithoutLeaks(m *testing.M) {
	code := m.Run()
	Client.CloseIdleConnections()
	if code == 0 {
		if err := goleak.Find(
			// Process-wide by design: fasthttp's coarse clock and the shared
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
