#!/usr/bin/env bash
# The cost of TLS: SET throughput and latency of a local 3-node cluster with and without TLS
# on every port, measured side by side (the two alternate, ROUNDS rounds, medians reported).
#
#   bench/tls-cost.sh [ROUNDS]      (default 5)
#
# Each round starts a fresh `raftkv cluster` (plain, then `--tls`), waits for a leader, and
# runs redis-benchmark against node 1's Redis port: 1 client (latency-bound) and 50 clients.
# Needs redis-benchmark and redis-cli (Debian: redis-tools).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS="${1:-5}"
cargo build --release -q -p raftkv
BIN="$PWD/target/release/raftkv"
WORK="$(mktemp -d)"
SUP=""
trap '[ -n "$SUP" ] && kill "$SUP" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT

# One benchmark: prints "<requests per second> <p50 ms>".
bench() {
    local clients=$1 requests=$2
    shift 2
    redis-benchmark "$@" -p 6801 -t set -c "$clients" -n "$requests" -d 256 -r 1000 --csv 2>/dev/null |
        awk -F'"' '/"SET"/ {print $4, $10}'
}

run_mode() {
    local mode=$1 round=$2 data="$WORK/$1-$2" flags=() tls=()
    if [ "$mode" = tls ]; then
        flags=(--tls)
        tls=(--tls --cacert "$data/tls/ca.pem")
    fi
    "$BIN" cluster "${flags[@]}" --data-dir "$data" --base-port 7801 --resp-base-port 6801 \
        --metrics-base-port 0 >/dev/null 2>&1 &
    SUP=$!
    until redis-cli "${tls[@]}" -p 6801 SET warm up 2>/dev/null | grep -q OK; do sleep 0.1; done
    echo "$mode $round c1 $(bench 1 2000 "${tls[@]}")"
    echo "$mode $round c50 $(bench 50 20000 "${tls[@]}")"
    kill "$SUP"
    wait "$SUP" 2>/dev/null || true
    SUP=""
}

for round in $(seq 1 "$ROUNDS"); do
    run_mode plain "$round"
    run_mode tls "$round"
done | tee "$WORK/results"

median() { sort -n | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
echo
printf "%-10s %14s %14s %10s\n" "SET" "plain" "TLS" "TLS/plain"
for c in c1 c50; do
    for field in 4 5; do
        plain=$(awk -v c="$c" -v f="$field" '$1 == "plain" && $3 == c {print $f}' "$WORK/results" | median)
        tls=$(awk -v c="$c" -v f="$field" '$1 == "tls" && $3 == c {print $f}' "$WORK/results" | median)
        what=$([ "$field" = 4 ] && echo "req/s" || echo "p50 ms")
        printf "%-10s %14s %14s %10.2f\n" "$c $what" "$plain" "$tls" "$(echo "$tls / $plain" | bc -l)"
    done
done
