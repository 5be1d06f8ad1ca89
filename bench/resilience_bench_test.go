package bench

import (
	"testing"

	"github.com/sluice-gw/sluice/internal/testkit"
)

const resilienceYAML = `
log: {access_log: false}
upstreams:
  up: {url: "http://upstream.test"}
  pool: {targets: ["http://upstream.test", "http://upstream.test/"], balance: least_inflight}
routes:
  plain: {path: "/plain/{path:*}", upstream: up, strip_prefix: "/plain"}
  breaker: {path: "/breaker/{path:*}", upstream: up, strip_prefix: "/breaker", plugins: {circuit_breaker: {}}}
  retry: {path: "/retry/{path:*}", upstream: up, strip_prefix: "/retry", plugins: {retry: {}}}
  resilient:
    path: "/resilient/{path:*}"
    upstream: pool
    strip_prefix: "/resilient"
    plugins:
      retry: {}
      circuit_breaker: {failure_ratio: 0.5}
`

// BenchmarkResilience compares a bare route with circuit_breaker, retry, and
// both on a two-target least_inflight pool, when the upstream answers 200.
func BenchmarkResilience(b *testing.B) {
	for _, name := range []string{"plain", "breaker", "retry", "resilient"} {
		b.Run(name, func(b *testing.B) {
			im := testkit.NewInMemory(b, resilienceYAML, origin)
			run(b, im.Client, "http://gateway/"+name+"/json", 200)
		})
	}
}
