// Package bench holds Sluice's benchmarks: in-process benchmarks of the real
// server, router, pipeline and upstream client over in-memory listeners, and
// the allocation tests that guard the request path in CI (bench_test.go,
// *_alloc_test.go).
//
// The loopback load test beside nginx, HAProxy and Varnish is bench/run.sh
// (source: bench/cmd/peers; the origin and the bare fasthttp proxy it starts:
// bench/cmd/origin, bench/cmd/floor; the peers' configs: bench/peers/; the
// open-loop load generator: bench/openloop). Results and the commands that
// produced them are in RESULTS.md.
package bench
