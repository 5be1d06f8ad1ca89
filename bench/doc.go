// Package bench holds Sluice's benchmarks: in-process benchmarks of the real
// server, router, pipeline and upstream client over in-memory listeners
// (bench_test.go), and the loopback load test beside nginx (load.sh).
// Results and the commands that produced them are in RESULTS.md.
package bench
