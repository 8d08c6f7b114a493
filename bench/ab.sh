#!/usr/bin/env bash
# Two builds side by side: SET throughput and latency of a fresh local 3-node cluster of
# each, the two alternating, ROUNDS rounds, medians reported with the ratio B / A.
#
#   bench/ab.sh A_BINARY B_BINARY [ROUNDS]      (default 5; RUN_SECONDS=n per run, default 5)
#
# Each round runs 1 client over 1 connection and 64 clients over 8, through node 1's Redis
# port, with B's `raftkv bench`. To compare a change with its parent:
#   git stash && cargo build --release -p raftkv && cp target/release/raftkv /tmp/a
#   git stash pop && cargo build --release -p raftkv && bench/ab.sh /tmp/a target/release/raftkv
set -euo pipefail
A="$1" B="$2" ROUNDS="${3:-5}" RUN_SECONDS="${RUN_SECONDS:-5}"
WORK="$(mktemp -d)"
SUP=""
trap '[ -n "$SUP" ] && kill "$SUP" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT

run() {
    local bin=$1 tag=$2 round=$3
    "$bin" cluster --data-dir "$WORK/$tag-$round" --base-port 7841 --resp-base-port 6841 \
        --metrics-base-port 0 >/dev/null 2>&1 &
    SUP=$!
    until redis-cli -p 6841 SET warm up 2>/dev/null | grep -q OK; do sleep 0.1; done
    for shape in "1 1" "64 8"; do
        read -r clients connections <<<"$shape"
        "$B" bench --redis 127.0.0.1:6841 --clients "$clients" --connections "$connections" \
            --duration "${RUN_SECONDS}s" --csv -q | tail -1 |
            awk -F, -v t="$tag" -v c="c$clients" '{print t, c, $7, $8, $10}'
    done
    kill "$SUP"
    wait "$SUP" 2>/dev/null || true
    SUP=""
}

for round in $(seq 1 "$ROUNDS"); do
    run "$A" A "$round"
    run "$B" B "$round"
done | tee "$WORK/results"

median() { sort -n | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
figure() { awk -v t="$1" -v c="$2" -v f="$3" '$1 == t && $2 == c {print $f}' "$WORK/results" | median; }
echo
printf "%-22s %12s %12s %8s\n" "SET" "A" "B" "B/A"
for c in c1 c64; do
    for field in 3 4 5; do
        name=$(case $field in 3) echo "req/s" ;; 4) echo "p50 ms" ;; 5) echo "p99 ms" ;; esac)
        a=$(figure A "$c" "$field") b=$(figure B "$c" "$field")
        printf "%-22s %12s %12s %8.2f\n" "$c $name" "$a" "$b" "$(echo "$b / $a" | bc -l)"
    done
done
