#!/usr/bin/env bash
# raftkv against etcd on this machine: 3-node clusters of each on loopback, the same load
# (8-byte keys, 256-byte values, 1,000 keys), the two systems alternating, ROUNDS rounds,
# medians reported with the ratio raftkv / etcd.
#
#   bench/compare-etcd.sh [ROUNDS]     (default 5; RUN_SECONDS=n per run, default 10)
#
# raftkv is loaded by `raftkv bench` through its Redis ports; etcd by bench/etcd-load through
# its gRPC API, which reports with the same code. The 1-client runs go to each system's leader
# (found before each run), so that neither pays a forward from a follower by the luck of which
# node leads; the other runs spread their connections over the three nodes. Server CPU is the
# user + system time of the three server processes during the 1000-client write run. A second
# raftkv cluster serves reads under leases (`--reads lease`, docs/DIVERGENCE.md): its rows
# compare against the same etcd read runs. bench/fsync-probe.py measures, before and after
# the rounds, what an fdatasync costs alone and three at once on the disk the nodes share:
# the floor under the write rows. Installs etcd (Debian's etcd-server) and protoc (to
# build etcd-load) with apt-get if they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS="${1:-5}"
RUN_SECONDS="${RUN_SECONDS:-10}"
for tool in etcd:etcd-server protoc:protobuf-compiler redis-cli:redis-tools curl:curl; do
    if ! command -v "${tool%%:*}" >/dev/null; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${tool#*:}" >/dev/null
    fi
done
cargo build --release -q -p raftkv
cargo build --release -q --manifest-path bench/etcd-load/Cargo.toml
RAFTKV="$PWD/target/release/raftkv"
ETCD_LOAD="$PWD/bench/etcd-load/target/release/etcd-load"
WORK="$(mktemp -d)"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# etcd: clients on 2379{1,2,3}, peers on 2380{1,2,3}.
cluster=""
for i in 1 2 3; do cluster+="${cluster:+,}e$i=http://127.0.0.1:2380$i"; done
ETCD_PIDS=()
for i in 1 2 3; do
    etcd --name "e$i" --data-dir "$WORK/etcd$i" \
        --listen-client-urls "http://127.0.0.1:2379$i" --advertise-client-urls "http://127.0.0.1:2379$i" \
        --listen-peer-urls "http://127.0.0.1:2380$i" --initial-advertise-peer-urls "http://127.0.0.1:2380$i" \
        --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token bench \
        --log-level error >"$WORK/etcd$i.log" 2>&1 &
    ETCD_PIDS+=($!)
    PIDS+=($!)
done
ETCD_ENDPOINTS="http://127.0.0.1:23791,http://127.0.0.1:23792,http://127.0.0.1:23793"

# raftkv: Redis ports 6831..6833.
"$RAFTKV" cluster --data-dir "$WORK/raftkv" --base-port 7831 --resp-base-port 6831 \
    --metrics-base-port 0 >"$WORK/raftkv.log" 2>&1 &
SUP=$!
PIDS+=($SUP)
RAFTKV_REDIS="127.0.0.1:6831,127.0.0.1:6832,127.0.0.1:6833"
until redis-cli -p 6831 SET warm up 2>/dev/null | grep -q OK; do sleep 0.2; done
until "$ETCD_LOAD" --endpoints "$ETCD_ENDPOINTS" --clients 1 --connections 1 --seconds 0.2 \
    >/dev/null 2>&1; do sleep 0.5; done
RAFTKV_PIDS=($(pgrep -P "$SUP"))

# raftkv with read leases: Redis ports 6841..6843.
"$RAFTKV" cluster --data-dir "$WORK/raftkv-lease" --base-port 7841 --resp-base-port 6841 \
    --metrics-base-port 0 --reads lease >"$WORK/raftkv-lease.log" 2>&1 &
LEASE_SUP=$!
PIDS+=($LEASE_SUP)
LEASE_REDIS="127.0.0.1:6841,127.0.0.1:6842,127.0.0.1:6843"
until redis-cli -p 6841 SET warm up 2>/dev/null | grep -q OK; do sleep 0.2; done
LEASE_PIDS=($(pgrep -P "$LEASE_SUP"))

# User + system CPU seconds of the given processes so far.
cpu() {
    local ticks=0
    for pid in "$@"; do
        ticks=$((ticks + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
    done
    echo "scale=3; $ticks / $(getconf CLK_TCK)" | bc
}

# The client endpoint of etcd's leader, and the Redis address of raftkv's.
etcd_leader() {
    for i in 1 2 3; do
        curl -s -X POST -d '{}' "http://127.0.0.1:2379$i/v3/maintenance/status" |
            python3 -c 'import json, sys; s = json.load(sys.stdin); sys.exit(s["header"]["member_id"] != s["leader"])' &&
            { echo "http://127.0.0.1:2379$i"; return; }
    done
    echo "no etcd leader" >&2
    exit 1
}
raftkv_leader() {
    local prefix=$1
    for i in 1 2 3; do
        redis-cli -p "$prefix$i" INFO | grep -q '^raft_role:leader' && { echo "127.0.0.1:$prefix$i"; return; }
    done
    echo "no raftkv leader" >&2
    exit 1
}

# One run: prints "<system> <workload> <req/s> <p50 ms> <p99 ms> <CPU s per 10k requests>".
run() {
    local system=$1 name=$2 workload=$3 clients=$4 connections=$5 line before after pids
    local endpoints="$ETCD_ENDPOINTS" redis="$RAFTKV_REDIS" prefix=683
    case $system in
        etcd) pids=("${ETCD_PIDS[@]}") ;;
        raftkv) pids=("${RAFTKV_PIDS[@]}") ;;
        lease) pids=("${LEASE_PIDS[@]}") redis="$LEASE_REDIS" prefix=684 ;;
    esac
    if [ "$clients" = 1 ]; then
        if [ "$system" = etcd ]; then endpoints=$(etcd_leader); else redis=$(raftkv_leader $prefix); fi
    fi
    before=$(cpu "${pids[@]}")
    if [ "$system" = etcd ]; then
        line=$("$ETCD_LOAD" --endpoints "$endpoints" --workload "$workload" \
            --clients "$clients" --connections "$connections" --seconds "$RUN_SECONDS" --csv | tail -1)
    else
        line=$("$RAFTKV" bench --redis "$redis" --workload "$workload" --clients "$clients" \
            --connections "$connections" --duration "${RUN_SECONDS}s" --csv -q | tail -1)
    fi
    after=$(cpu "${pids[@]}")
    # workload,clients,connections,seconds,requests,errors,throughput,p50,p90,p99,p999,max
    echo "$line" | awk -F, -v s="$system" -v n="$name" -v cpu="$(echo "$after - $before" | bc)" \
        '{ if ($6 > 0) print "errors in", s, n > "/dev/stderr";
           printf "%s %s %s %s %s %.3f\n", s, n, $7, $8, $10, cpu * 10000 / ($5 > 0 ? $5 : 1) }'
}

# The disk's floor under the write rows, on the file system the nodes write to; again after
# the rounds, since the machine's speed drifts.
DISK_BEFORE=$(bench/fsync-probe.py "$WORK")

WORKLOADS=(
    "w1 put 1 1"
    "w64 put 64 8"
    "w1000 put 1000 100"
    "r1 get 1 1"
    "r1000 get 1000 100"
)
for round in $(seq 1 "$ROUNDS"); do
    for w in "${WORKLOADS[@]}"; do
        read -r name workload clients connections <<<"$w"
        run etcd "$name" "$workload" "$clients" "$connections"
        run raftkv "$name" "$workload" "$clients" "$connections"
        if [ "$workload" = get ]; then run lease "$name" "$workload" "$clients" "$connections"; fi
    done
done | tee "$WORK/results"

median() { sort -n | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
figure() { awk -v s="$1" -v n="$2" -v f="$3" '$1 == s && $2 == n {print $f}' "$WORK/results" | median; }
echo
echo "medians of $ROUNDS rounds, ${RUN_SECONDS} s each (etcd $(etcd --version | awk '/etcd Version/ {print $3}'))"
# Whether idle cores poll before they halt decides what a wake-up costs on a virtual machine,
# and so most of the single-client rows (README).
HALT_POLL=/sys/module/haltpoll/parameters/guest_halt_poll_ns
if [ -r "$HALT_POLL" ]; then echo "guest halt polling: $(cat "$HALT_POLL") ns"; fi
echo "before the rounds, $DISK_BEFORE"
echo "after the rounds,  $(bench/fsync-probe.py "$WORK")"
printf "%-48s %22s %22s %8s\n" "workload" "etcd" "raftkv" "ratio"
label() {
    case $1 in
        w1) echo "writes, 1 client" ;; w64) echo "writes, 64 clients over 8 connections" ;;
        w1000) echo "writes, 1000 clients over 100 connections" ;; r1) echo "linearizable reads, 1 client" ;;
        r1000) echo "linearizable reads, 1000 clients" ;;
    esac
}
for w in "${WORKLOADS[@]}"; do
    read -r name _ <<<"$w"
    e=$(figure etcd "$name" 3) r=$(figure raftkv "$name" 3)
    printf "%-48s %9.0f/s p50 %5.2f %9.0f/s p50 %5.2f %8.2f\n" "$(label "$name")" \
        "$e" "$(figure etcd "$name" 4)" "$r" "$(figure raftkv "$name" 4)" "$(echo "$r / $e" | bc -l)"
done
for name in r1 r1000; do
    e=$(figure etcd "$name" 3) r=$(figure lease "$name" 3)
    printf "%-48s %9.0f/s p50 %5.2f %9.0f/s p50 %5.2f %8.2f\n" "$(label "$name"), --reads lease" \
        "$e" "$(figure etcd "$name" 4)" "$r" "$(figure lease "$name" 4)" "$(echo "$r / $e" | bc -l)"
done
e=$(figure etcd w1000 6) r=$(figure raftkv w1000 6)
printf "%-48s %20.2f s %20.2f s %8.2f\n" "server CPU per 10k writes (1000 clients)" "$e" "$r" \
    "$(echo "$r / $e" | bc -l)"
