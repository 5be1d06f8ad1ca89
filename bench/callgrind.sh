#!/bin/bash
# Instructions per request of one in-process benchmark, counted by callgrind:
# the benchmark runs 5,000 and 25,000 times under valgrind, and the
# difference of the two totals over 20,000 leaves out set-up and tear-down.
# Deterministic, so a before/after comparison holds on a busy machine.
#
#   go test -c -o /tmp/bench.test ./bench
#   bench/callgrind.sh /tmp/bench.test BenchmarkPassThrough [OUTPREFIX]
#
# Needs valgrind (Debian package valgrind). The callgrind files stay at
# OUTPREFIX-NAME-N.out (default /tmp/cg) for callgrind_annotate.
set -euo pipefail
bin=$1 name=$2 out=${3:-/tmp/cg}
command -v valgrind >/dev/null || { echo "valgrind not found: apt-get install -y valgrind" >&2; exit 1; }
total() {
	local n=$1 f=$out-$name-$1.out
	GODEBUG=asyncpreemptoff=1,cpu.rdtscp=off GOMAXPROCS=1 valgrind --tool=callgrind --callgrind-out-file="$f" \
		"$bin" -test.run '^$' -test.bench "^$name\$" -test.benchtime "${n}x" > "$f.log" 2>&1
	# a name that matches no benchmark runs nothing and would print a number near 0
	grep -q "^$name" "$f.log" || { echo "$name did not run (full name, e.g. BenchmarkPassThrough?)" >&2; exit 1; }
	grep -E '^(summary|totals):' "$f" | head -1 | awk '{print $2}'
}
a=$(total 5000)
b=$(total 25000)
echo "$name $(((b - a) / 20000)) instructions per request"
