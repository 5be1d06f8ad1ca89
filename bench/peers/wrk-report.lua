-- wrk script of the load test (bench/run.sh): after a run, print one line the
-- harness parses. Latencies are wrk's (closed loop: measured from the moment
-- a connection was free to send), in microseconds.
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d status=%d connect=%d read=%d write=%d timeout=%d p50=%d p99=%d p999=%d\n",
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end
