#!/usr/bin/env bash
# Memory, disk and restart of a 3-node local cluster under log compaction.
#
#   bench/compaction.sh [SETS] [KEYS] [VALUE_BYTES]     (defaults: 1000000 1000 256)
#
# Starts three `raftkv server` processes on 127.0.0.1 (data in a temporary directory), sends
# SETS writes of VALUE_BYTES-byte values to KEYS keys with redis-benchmark (50 connections),
# then reports each node's RSS and data directory; kills every node (SIGKILL), restarts them
# and reports how long the first write took and the RSS after the restart. Needs
# redis-benchmark and redis-cli (Debian: redis-tools). Extra server flags: $RAFTKV_FLAGS.
set -euo pipefail
cd "$(dirname "$0")/.."

SETS="${1:-1000000}"
KEYS="${2:-1000}"
VALUE="${3:-256}"
cargo build --release -q -p raftkv
BIN="$PWD/target/release/raftkv"
DATA="$(mktemp -d)"
PEERS="1=127.0.0.1:7201,2=127.0.0.1:7202,3=127.0.0.1:7203"
declare -A PID

start() {
    for i in 1 2 3; do
        # shellcheck disable=SC2086
        "$BIN" server --id "$i" --peers "$PEERS" --data-dir "$DATA/n$i" \
            --resp "127.0.0.1:640$i" ${RAFTKV_FLAGS:-} 2>>"$DATA/n$i.log" &
        PID[$i]=$!
    done
}

stop() {
    for i in 1 2 3; do
        kill -KILL "${PID[$i]}" 2>/dev/null || true
        { wait "${PID[$i]}" || true; } 2>/dev/null
    done
}
trap 'stop; rm -rf "$DATA"' EXIT

report() {
    for i in 1 2 3; do
        rss=$(awk '/VmRSS/ {printf "%d", $2 / 1024}' "/proc/${PID[$i]}/status")
        disk=$(du -sb "$DATA/n$i" | awk '{printf "%.1f", $1 / 1048576}')
        echo "  node $i: RSS $rss MiB, data dir $disk MiB"
    done
}

first_write() {
    local t0=$1
    until redis-cli -p 6401 SET first-write 1 2>/dev/null | grep -q OK; do sleep 0.01; done
    echo "  first write $(echo "$(date +%s.%N) - $t0" | bc) s after the start"
}

start
first_write "$(date +%s.%N)"
echo "$SETS SETs of $VALUE-byte values to $KEYS keys:"
redis-benchmark -p 6401 -t set -n "$SETS" -r "$KEYS" -d "$VALUE" -c 50 -q 2>&1 \
    | tr '\r' '\n' | grep 'requests per second' | sed 's/^/  /'
report
echo "after killing and restarting every node:"
stop
t0=$(date +%s.%N)
start
first_write "$t0"
sleep 2
report
