#!/usr/bin/env bash
# load.sh - Sluice beside nginx proxy_pass (one worker) on one core, measured by
# the peerbench harness named by $PEERBENCH (not part of this repository): the proxies on CPU 0 (Sluice with GOMAXPROCS=1), the
# origin and wrk on CPU 1, targets interleaved over several rounds. Three
# Sluice configs: pass-through (sluice), the full plugin chain (sluice-chain)
# and cache hits (sluice-cache, beside the peers' caches with --cache).
#
#   bench/load.sh [-r ROUNDS] [-d SECONDS] [--all-peers] [--cache]
#
# Prints peerbench's table (req/s median/min/max, p50, p99, ratio to nginx,
# us/req0 = CPU-0 time per request) and a short verdict. Needs wrk and nginx
# (peerbench/install.sh installs them). Everything stops by itself.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PEERBENCH="${PEERBENCH:-}"
[ -n "$PEERBENCH" ] || { echo "load.sh: set PEERBENCH to a peerbench checkout (run.sh, install.sh)" >&2; exit 2; }
ROUNDS=5 DUR=6 ONLY="nginx" SCEN=pass
while [ $# -gt 0 ]; do
	case "$1" in
	-r) ROUNDS="$2"; shift 2 ;;
	-d) DUR="$2"; shift 2 ;;
	--all-peers) ONLY=""; shift ;;
	--cache) SCEN=both; shift ;;
	-h|--help) sed -n '2,11p' "$0"; exit 0 ;;
	*) echo "load.sh: unknown argument $1" >&2; exit 2 ;;
	esac
done
[ -x "$PEERBENCH/run.sh" ] || { echo "load.sh: peerbench not found at $PEERBENCH (set PEERBENCH)" >&2; exit 2; }
command -v wrk >/dev/null || { echo "load.sh: wrk missing: run $PEERBENCH/install.sh" >&2; exit 2; }

BIN="$(mktemp -d)/sluice"
trap 'rm -rf "$(dirname "$BIN")"' EXIT
(cd "$ROOT" && go build -trimpath -o "$BIN" ./cmd/sluice)
"$BIN" validate -config "$ROOT/bench/sluice-pass.yaml" >/dev/null
"$BIN" validate -config "$ROOT/bench/sluice-chain.yaml" >/dev/null
"$BIN" validate -config "$ROOT/bench/sluice-cache.yaml" >/dev/null

OUT="${OUT:-$ROOT/bench/out/$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"
args=(-s "$SCEN" -r "$ROUNDS" -d "$DUR" -o "$OUT"
	--exec "$BIN -config $ROOT/bench/sluice-pass.yaml"
	--exec "$BIN -config $ROOT/bench/sluice-chain.yaml"
	sluice=18086 sluice-chain=18087)
if [ "$SCEN" = both ]; then
	args+=(--exec "$BIN -config $ROOT/bench/sluice-cache.yaml" --cache sluice-cache=18096)
	[ -n "$ONLY" ] && ONLY="$ONLY haproxy varnish"
fi
[ -n "$ONLY" ] && args+=(--only "$ONLY")
"$PEERBENCH/run.sh" "${args[@]}"

# verdict from peerbench's runs.tsv: medians over rounds, side by side
awk -F'\t' '
function med(s,   a, n, i, j, x) { n = split(s, a, " "); for (i = 2; i <= n; i++) { x = a[i] + 0; for (j = i - 1; j >= 1 && a[j] + 0 > x; j--) a[j+1] = a[j]; a[j+1] = x }
	return (n % 2) ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2 }
NR > 1 && $1 == "pass" { rps[$2] = rps[$2] " " $4; p99[$2] = p99[$2] " " $6; us[$2] = us[$2] " " ($4 > 0 ? $10 * 10000 / $4 : 0) }
END {
	if (!("nginx" in rps) || !("sluice" in rps)) { print "verdict: nginx or sluice missing from the run"; exit }
	printf "\nverdict (medians of the same run):\n"
	for (t in rps) if (t == "sluice" || t == "sluice-chain") {
		printf "  %-13s req/s %7.0f = %.2fx nginx   p99 %.2f ms vs nginx %.2f ms   CPU0 %.1f us/req vs nginx %.1f us/req\n",
			t, med(rps[t]), med(rps[t]) / med(rps["nginx"]), med(p99[t]), med(p99["nginx"]), med(us[t]), med(us["nginx"]) }
}' "$OUT/runs.tsv" | tee -a "$OUT/summary.txt"
echo "raw results: $OUT"
