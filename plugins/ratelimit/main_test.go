package ratelimit_test

import (
	"fmt"
	"os"
	"testing"

	"github.com/sluice-gw/sluice/proxy/proxytest"
	"go.uber.org/goleak"
)

// TestMain fails the package if its tests leave goroutines behind: every
// gateway, upstream and Redis subscription a test starts must be gone.
func TestMain(m *testing.M) {
	code := m.Run()
	proxytest.Client.CloseIdleConnections()
	if code == 0 {
		if err := goleak.Find(
			// process-wide or bounded by design (see proxy/main_test.go)
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
