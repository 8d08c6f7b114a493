#!/usr/bin/env bash
# Two builds side by side: SET throughput, latency and context switches of a fresh local
# 3-node cluster of each, the two alternating, ROUNDS rounds, medians reported with the ratio
# B / A.
#
#   bench/ab.sh A_BINARY B_BINARY [ROUNDS]      (default 5; RUN_SECONDS=n per run, default 5)
#
# WORKLOAD=get (or mixed, append) loads another workload; A_ARGS and B_ARGS are added to each
# build's `raftkv cluster` command line, so one build can be compared with itself in two
# configurations:
#   WORKLOAD=get A_ARGS="--reads log" bench/ab.sh target/release/raftkv target/release/raftkv
#
# Each round runs 1 client over 1 connection and 64 clients over 8, through the leader's
# Redis port, with B's `raftkv bench`. Context switches are those of every thread of the three
# server processes during the run (voluntary and not, from /proc), per request. To compare a
# change with its parent:
#   git stash && cargo build --release -p raftkv && cp target/release/raftkv /tmp/a
#   git stash pop && cargo build --release -p raftkv && bench/ab.sh /tmp/a target/release/raftkv
set -euo pipefail
A="$1" B="$2" ROUNDS="${3:-5}" RUN_SECONDS="${RUN_SECONDS:-5}" WORKLOAD="${WORKLOAD:-put}"
WORK="$(mktemp -d)"
SUP=""
trap '[ -n "$SUP" ] && kill "$SUP" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT

# Context switches so far of every thread of the given processes.
switches() {
    cat $(for pid in "$@"; do echo /proc/"$pid"/task/*/status; done) 2>/dev/null |
        awk '/ctxt_switches/ {n += $2} END {print n + 0}'
}

run() {
    local bin=$1 tag=$2 round=$3 args=$4 port="" pids before after
    # shellcheck disable=SC2086 # the extra arguments are meant to split
    "$bin" cluster --data-dir "$WORK/$tag-$round" --base-port 7841 --resp-base-port 6841 \
        --metrics-base-port 0 $args >/dev/null 2>&1 &
    SUP=$!
    until redis-cli -p 6841 SET warm up 2>/dev/null | grep -q OK; do sleep 0.1; done
    for i in 1 2 3; do
        redis-cli -p "684$i" INFO | grep -q '^raft_role:leader' && port="684$i"
    done
    pids=$(pgrep -P "$SUP" | tr '\n' ' ')
    for shape in "1 1" "64 8"; do
        read -r clients connections <<<"$shape"
        before=$(switches $pids)
        line=$("$B" bench --redis "127.0.0.1:$port" --workload "$WORKLOAD" --clients "$clients" \
            --connections "$connections" --duration "${RUN_SECONDS}s" --csv -q | tail -1)
        after=$(switches $pids)
        echo "$line" | awk -F, -v t="$tag" -v c="c$clients" -v s=$((after - before)) \
            '{printf "%s %s %s %s %s %.2f\n", t, c, $7, $8, $10, s / ($5 > 0 ? $5 : 1)}'
    done
    kill "$SUP"
    wait "$SUP" 2>/dev/null || true
    SUP=""
}

for round in $(seq 1 "$ROUNDS"); do
    run "$A" A "$round" "${A_ARGS:-}"
    run "$B" B "$round" "${B_ARGS:-}"
done | tee "$WORK/results"

median() { sort -n | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
figure() { awk -v t="$1" -v c="$2" -v f="$3" '$1 == t && $2 == c {print $f}' "$WORK/results" | median; }
echo
printf "%-30s %12s %12s %8s\n" "$WORKLOAD" "A" "B" "B/A"
for c in c1 c64; do
    for field in 3 4 5 6; do
        name=$(case $field in 3) echo "req/s" ;; 4) echo "p50 ms" ;; 5) echo "p99 ms" ;;
            6) echo "context switches/request" ;; esac)
        a=$(figure A "$c" "$field") b=$(figure B "$c" "$field")
        printf "%-30s %12s %12s %8.2f\n" "$c $name" "$a" "$b" "$(echo "$b / $a" | bc -l)"
    done
done
