#!/usr/bin/env bash
# Pipelining: SET throughput of a local 3-node cluster with 64 clients over 64 connections
# (one request in flight each) and over 8 connections (8 pipelined requests each), measured
# side by side in one cluster (the two alternate, ROUNDS rounds, medians reported).
#
#   bench/pipelining.sh [ROUNDS]     (default 5; RAFTKV_BIN=path runs another build)
#
# redis-benchmark sends node 1's Redis port 256-byte values to 1,000 keys. Needs
# redis-benchmark and redis-cli (Debian: redis-tools).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS="${1:-5}"
REQUESTS="${REQUESTS:-40000}"
if [ -z "${RAFTKV_BIN:-}" ]; then
    cargo build --release -q -p raftkv
fi
BIN="${RAFTKV_BIN:-$PWD/target/release/raftkv}"
WORK="$(mktemp -d)"
SUP=""
trap '[ -n "$SUP" ] && kill "$SUP" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT

"$BIN" cluster --data-dir "$WORK/data" --base-port 7811 --resp-base-port 6811 \
    --metrics-base-port 0 >/dev/null 2>&1 &
SUP=$!
until redis-cli -p 6811 SET warm up 2>/dev/null | grep -q OK; do sleep 0.1; done

# One benchmark: prints "<requests per second> <p50 ms> <p99 ms>".
bench() {
    local connections=$1 pipeline=$2
    redis-benchmark -p 6811 -t set -c "$connections" -P "$pipeline" -n "$REQUESTS" -d 256 \
        -r 1000 --csv 2>/dev/null | awk -F'"' '/"SET"/ {print $4, $10, $14}'
}

for round in $(seq 1 "$ROUNDS"); do
    echo "c64 $round $(bench 64 1)"
    echo "c8p8 $round $(bench 8 8)"
done | tee "$WORK/results"

median() { sort -n | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
echo
printf "%-34s %10s %10s %10s\n" "SET, 64 clients" "req/s" "p50 ms" "p99 ms"
for mode in c64 c8p8; do
    label=$([ "$mode" = c64 ] && echo "over 64 connections" || echo "over 8 connections, 8 pipelined")
    printf "%-34s" "$label"
    for field in 3 4 5; do
        printf " %10s" "$(awk -v m="$mode" -v f="$field" '$1 == m {print $f}' "$WORK/results" | median)"
    done
    echo
done
