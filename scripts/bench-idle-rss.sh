#!/usr/bin/env bash
# Idle memory of Cirrus nodes (issue 3, benchmark 3): the resident set (VmRSS, from
# /proc/PID/status) of one node alone, then of a NODES-node testnet on loopback, after
# the nodes have been connected and idle for IDLE_SECS. Each node runs on a fresh data
# dir with default settings, on its own 127.0.0.x address and port 0; nodes 2..NODES
# bootstrap through node 1. Also prints each node's peer count and the CPU time the
# nodes used while idle.
#
# Usage: scripts/bench-idle-rss.sh
# Environment (defaults in brackets):
#   NODES        size of the testnet                        [20]
#   IDLE_SECS    idle time before reading VmRSS             [10]
#   MIN_PEERS    peers every testnet node must have first   [4]
#   IP_BASE      node i binds 127.0.0.(IP_BASE+i)           [60]
#   BENCH_DIR    parent of the temp data dirs               [$TMPDIR or /tmp]
set -euo pipefail

cd "$(dirname "$0")/.."
NODES=${NODES:-20}
IDLE_SECS=${IDLE_SECS:-10}
MIN_PEERS=${MIN_PEERS:-4}
IP_BASE=${IP_BASE:-60}
BENCH_DIR=${BENCH_DIR:-${TMPDIR:-/tmp}}

# Same build as the other benchmarks: building examples too changes dependency features,
# so `--bins` alone would rebuild (and measure) a slightly different binary.
cargo build --release --bins --examples
CIRRUS=${CARGO_TARGET_DIR:-target}/release/cirrus

root=$(mktemp -d "$BENCH_DIR/cirrus-bench-rss.XXXXXX")
pids=()
urls=()
stop_all() {
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    pids=()
    urls=()
}
trap 'stop_all; rm -rf "$root"' EXIT

# start_node NAME IP [BOOTSTRAP]: start a node, wait for its ready line; appends to
# pids and urls, and sets tcp_addr to its TCP multiaddr.
start_node() {
    local dir=$root/$1
    mkdir -p "$dir"
    : >"$dir/stdout"
    local boot=()
    if [[ -n ${3:-} ]]; then boot=(--bootstrap "$3"); fi
    "$CIRRUS" run --data-dir "$dir/data" --bind "$2" --http-port 0 --p2p-port 0 "${boot[@]}" \
        >"$dir/stdout" 2>"$dir/stderr" &
    local pid=$!
    local line=""
    for _ in $(seq 200); do
        line=$(grep -m1 '"event":"ready"' "$dir/stdout" || true)
        if [[ -n $line ]]; then break; fi
        if ! kill -0 "$pid" 2>/dev/null; then cat "$dir/stderr" >&2; exit 1; fi
        sleep 0.05
    done
    [[ -n $line ]] || { echo "node $1 did not print its ready line" >&2; exit 1; }
    pids+=("$pid")
    urls+=("http://$(jq -r .http <<<"$line")")
    tcp_addr=$(jq -r '.listen[] | select(contains("/tcp/"))' <<<"$line" | head -1)
}

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
hwm_kb() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }
threads() { awk '/^Threads:/ { print $2 }' "/proc/$1/status"; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
peers() {
    curl -s -m 5 -H 'content-type: application/json' \
        -d '{"jsonrpc":"2.0","id":1,"method":"getpeerinfo"}' "$1" | jq '.result | length'
}
HZ=$(getconf CLK_TCK)

# idle_report LABEL: sleep IDLE_SECS, then print VmRSS and more for every node.
idle_report() {
    local before=()
    for p in "${pids[@]}"; do before+=("$(cpu_ticks "$p")"); done
    sleep "$IDLE_SECS"
    local total=0 max=0 min=999999999 i=0 cpu=0
    echo "$1 (after ${IDLE_SECS} s idle):"
    echo "| node | peers | VmRSS MB | VmHWM MB | threads | CPU ms while idle |"
    echo "|---:|---:|---:|---:|---:|---:|"
    for p in "${pids[@]}"; do
        local kb hwm c
        kb=$(rss_kb "$p")
        hwm=$(hwm_kb "$p")
        c=$(($(cpu_ticks "$p") - before[i]))
        cpu=$((cpu + c))
        total=$((total + kb))
        ((kb > max)) && max=$kb
        ((kb < min)) && min=$kb
        awk -v n=$((i + 1)) -v peers="$(peers "${urls[i]}")" -v kb="$kb" -v hwm="$hwm" \
            -v t="$(threads "$p")" -v c="$c" -v hz="$HZ" \
            'BEGIN { printf "| %d | %s | %.1f | %.1f | %d | %.0f |\n", n, peers, kb / 1024, hwm / 1024, t, c * 1000 / hz }'
        i=$((i + 1))
    done
    awk -v n="$i" -v t="$total" -v mx="$max" -v mn="$min" -v c="$cpu" -v hz="$HZ" -v s="$IDLE_SECS" \
        'BEGIN { printf "%d nodes: total %.1f MB, mean %.1f MB, min %.1f MB, max %.1f MB per node; idle CPU %.2f%% of one core per node\n\n", n, t / 1024, t / n / 1024, mn / 1024, mx / 1024, c / hz / s / n * 100 }'
}

start_node single "127.0.0.$IP_BASE"
idle_report "one node, no peers"
stop_all

start_node n01 "127.0.0.$((IP_BASE + 1))"
first=$tcp_addr
for i in $(seq 2 "$NODES"); do
    start_node "$(printf 'n%02d' "$i")" "127.0.0.$((IP_BASE + i))" "$first"
done
want=$((MIN_PEERS < NODES - 1 ? MIN_PEERS : NODES - 1))
deadline=$((SECONDS + 60))
while :; do
    ok=1
    for u in "${urls[@]}"; do
        if (($(peers "$u") < want)); then ok=0; break; fi
    done
    if ((ok)); then break; fi
    if ((SECONDS > deadline)); then echo "not every node has $want peers after 60 s" >&2; break; fi
    sleep 0.5
done
idle_report "$NODES-node testnet"
