#!/usr/bin/env bash
# bench/run.sh - Sluice's load test beside nginx, HAProxy and Varnish on
# loopback, everything it needs in bench/ (source: bench/cmd/peers).
#
#   bench/run.sh              # default run, about 6 minutes
#   bench/run.sh -quick       # smoke run, about 2 minutes
#   bench/run.sh -procs 2     # scaling: GOMAXPROCS 2, 2 nginx workers, 2 HAProxy threads
#   bench/run.sh -h           # every flag
#
# Needs wrk, nginx, haproxy, varnishd and taskset; when one is missing it
# names the Debian packages (apt-get install -y wrk nginx-light haproxy varnish).
# Prints progress and one table; raw results (CSV, JSON), PNG charts and the
# servers' logs go to bench/out/<UTC time>/. Stops every process it started.
set -euo pipefail
cd "$(dirname "$0")/.."
exec go run ./bench/cmd/peers "$@"
