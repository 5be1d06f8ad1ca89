#!/bin/bash
# Instructions per request of a gateway process alone, over loopback TCP,
# counted by callgrind: the gateway runs under valgrind on CPU 0
# (GOMAXPROCS=1) while wrk drives it from CPU 1 for 5 s and then for 20 s;
# the difference of the two totals over the difference of the two request
# counts leaves out start-up. Unlike bench/callgrind.sh (in-process: client,
# gateway and origin in one process) this counts only what the gateway does,
# system calls excluded. Deterministic enough for before/after comparisons on
# a busy machine (a few hundred instructions between runs).
#
#   go build -o /tmp/origin ./bench/cmd/origin && taskset -c 1 /tmp/origin &
#   go build -o /tmp/sluice ./cmd/sluice
#   bench/callgrind-gw.sh 28086 /tmp/sluice run -config bench/sluice-pass.yaml
#   bench/callgrind-gw.sh 28087 /tmp/sluice run -config bench/sluice-chain.yaml
#   go build -o /tmp/floor ./bench/cmd/floor && bench/callgrind-gw.sh 28083 /tmp/floor
#
# PORT is where the gateway listens; every request is GET /json with the
# load test's X-Api-Key. Needs valgrind, wrk, curl and taskset. The callgrind
# files stay in $CG_OUT (default /tmp/cggw) for callgrind_annotate.
# (cpu.rdtscp=off: valgrind does not know RDTSCP; the runtime honours the
# setting though the x/sys/cpu package prints that it does not know it.)
set -euo pipefail
port=$1
shift
out=${CG_OUT:-/tmp/cggw}
mkdir -p "$out"
for tool in valgrind callgrind_control wrk curl taskset; do
	command -v $tool >/dev/null || { echo "$tool not found (Debian: valgrind wrk curl util-linux)" >&2; exit 1; }
done
url=http://127.0.0.1:$port/json
key='X-Api-Key: loadtest-key-0123456789'
run() { # run SECONDS -> "requests instructions"
	local dur=$1 f=$out/gw-$port-$1.out
	shift
	rm -f "$f"*
	GOMAXPROCS=1 GODEBUG=asyncpreemptoff=1,cpu.rdtscp=off taskset -c 0 valgrind --tool=callgrind --callgrind-out-file="$f" "$@" >"$f.log" 2>&1 &
	local pid=$!
	local up=0
	for _ in $(seq 1 100); do
		if curl -s -o /dev/null -H "$key" "$url"; then up=1; break; fi
		sleep 0.3
	done
	[ $up = 1 ] || { kill -9 $pid 2>/dev/null; echo "nothing answers on $url (see $f.log)" >&2; exit 1; }
	local n
	n=$(taskset -c 1 wrk -t1 -c8 -d"${dur}s" -H "$key" "$url" | awk '/requests in/{print $1}')
	# A dump on request, then SIGKILL: callgrind cannot follow Go's own
	# signal handling through a graceful exit.
	callgrind_control -d $pid >/dev/null 2>&1
	sleep 1
	kill -9 $pid 2>/dev/null || true
	wait $pid 2>/dev/null || true
	local dump
	dump=$(ls -t "$f".* | grep -v '\.log$' | head -1)
	echo "$n $(grep -E '^(summary|totals):' "$dump" | head -1 | awk '{print $2}')"
}
read -r n1 i1 < <(run 5 "$@")
read -r n2 i2 < <(run 20 "$@")
echo "$(basename "$1") on :$port: $(((i2 - i1) / (n2 - n1))) instructions per request ($((n2 - n1)) requests measured)"
