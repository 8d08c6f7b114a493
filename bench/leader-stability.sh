#!/usr/bin/env bash
# Leader stability under a saturated write load: a fresh local 3-node cluster, SETs from
# CLIENTS clients over CONNECTIONS connections spread over the three nodes for SECONDS, no
# fault injected. Reports the load's figures and every change of term or leader seen, by
# sampling each node's INFO every second and reading its leader-change counter at the end.
#
#   bench/leader-stability.sh [SECONDS] [CLIENTS] [CONNECTIONS]     (default 300 1000 100)
#
# It passes (exit 0) only if the term and the leader never changed.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_TO_RUN="${1:-300}" CLIENTS="${2:-1000}" CONNECTIONS="${3:-100}"
cargo build --release -q -p raftkv
RAFTKV="$PWD/target/release/raftkv"
WORK="$(mktemp -d)"
SUP="" SAMPLER=""
trap '[ -n "$SAMPLER" ] && kill "$SAMPLER" 2>/dev/null; [ -n "$SUP" ] && kill "$SUP" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT
"$RAFTKV" cluster --data-dir "$WORK/data" --base-port 7871 --resp-base-port 6871 \
    --metrics-base-port 9171 >"$WORK/cluster.log" 2>&1 &
SUP=$!
until redis-cli -p 6871 SET warm up 2>/dev/null | grep -q OK; do sleep 0.2; done
info() { redis-cli -p "$1" INFO | tr -d '\r' | awk -F: -v k="$2" '$1 == k {print $2}'; }
changes() {
    local total=0
    for i in 1 2 3; do
        total=$((total + $(curl -s "http://127.0.0.1:917$i/metrics" |
            awk '/^raftkv_server_leader_changes_seen/ {print int($2)}')))
    done
    echo "$total"
}
term0=$(info 6871 raft_term) leader0=$(info 6871 raft_leader) changes0=$(changes)
echo "start: term $term0, leader $leader0"
# One line per second per node: "<unix time> <node> <term> <leader>".
(while true; do
    for i in 1 2 3; do echo "$(date +%s) $i $(info "687$i" raft_term) $(info "687$i" raft_leader)"; done
    sleep 1
done) >"$WORK/samples" 2>/dev/null &
SAMPLER=$!
"$RAFTKV" bench --redis 127.0.0.1:6871,127.0.0.1:6872,127.0.0.1:6873 --workload put \
    --clients "$CLIENTS" --connections "$CONNECTIONS" --duration "${SECONDS_TO_RUN}s" \
    --plot "${PLOT:-$WORK/plot.svg}" -q
kill "$SAMPLER"
SAMPLER=""
changes1=$(changes)
terms=$(awk '{print $3}' "$WORK/samples" | sort -u | tr '\n' ' ')
leaders=$(awk '{print $4}' "$WORK/samples" | sort -u | tr '\n' ' ')
echo "terms seen: $terms; leader ids seen: $leaders; leader changes counted by the nodes: $((changes1 - changes0))"
[ "$(echo "$terms" | wc -w)" = 1 ] && [ "$(echo "$leaders" | wc -w)" = 1 ] && [ "$changes1" = "$changes0" ]
