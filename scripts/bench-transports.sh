#!/usr/bin/env bash
# Request rate of `getdbhash` over each API transport of one release node, next to a
# bare axum handler that answers a constant (the ceiling), on this machine, in one
# run (issue 5). HTTP: wrk with a Lua script for the POST body. WebSocket and UDP:
# the rpc_load example (closed loop, one request in flight per connection; the UDP
# sockets do the cookie round trip first, so they are validated sources). One more
# HTTP row calls an unknown method: the same HTTP and JSON-RPC path without the
# store, to show what `getdbhash` itself costs. The server's CPU time per request
# (from /proc/PID/stat) is printed too: on a shared machine it varies less than req/s.
#
# Usage: scripts/bench-transports.sh
# Environment (defaults in brackets):
#   CONNECTIONS   concurrent connections / sockets          [32]
#   SECONDS_EACH  length of each measurement                [10]
#   ROUNDS        times the five measurements are repeated  [3]
#   RECORDS       records put into the node first           [1000]
#   LOAD_THREADS  threads of wrk and of rpc_load            [1]
#   BENCH_DIR     parent of the temp data dir               [$TMPDIR or /tmp]
# Needs wrk (Debian package wrk; installed with apt-get when missing and root).
set -euo pipefail

cd "$(dirname "$0")/.."
CONNECTIONS=${CONNECTIONS:-32}
SECONDS_EACH=${SECONDS_EACH:-10}
ROUNDS=${ROUNDS:-3}
RECORDS=${RECORDS:-1000}
LOAD_THREADS=${LOAD_THREADS:-1}
BENCH_DIR=${BENCH_DIR:-${TMPDIR:-/tmp}}

if ! command -v wrk >/dev/null; then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        apt-get install -y -q wrk >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q wrk >/dev/null; }
    else
        echo "wrk is not installed (Debian: apt-get install wrk)" >&2
        exit 1
    fi
fi

cargo build -q --release --bins --examples
BIN=${CARGO_TARGET_DIR:-target}/release
CIRRUS=$BIN/cirrus
LOAD=$BIN/examples/rpc_load
BARE=$BIN/examples/bare_axum
PUT_LOAD=$BIN/examples/put_load

work=$(mktemp -d "$BENCH_DIR/cirrus-bench-transports.XXXXXX")
node_pid=""
bare_pid=""
cleanup() {
    for pid in $node_pid $bare_pid; do
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    rm -rf "$work"
}
trap cleanup EXIT

# wait_ready FILE PID: print the ready line once FILE has it.
wait_ready() {
    for _ in $(seq 200); do
        if grep -q '"event":"ready"' "$1"; then
            grep '"event":"ready"' "$1"
            return
        fi
        kill -0 "$2" 2>/dev/null || { echo "process $2 exited" >&2; exit 1; }
        sleep 0.1
    done
    echo "no ready line in $1" >&2
    exit 1
}
field() { # field LINE NAME -> the string value of "NAME":"..."
    sed -n "s/.*\"$2\":\"\([^\"]*\)\".*/\1/p" <<<"$1"
}
num() { # num LINE NAME -> the number after "NAME":
    sed -n "s/.*\"$2\":\([0-9.eE+-]*\).*/\1/p" <<<"$1"
}

: >"$work/node.out"
: >"$work/bare.out"
"$CIRRUS" run --data-dir "$work/data" --bind 127.0.0.1 --http-port 0 --p2p-port 0 \
    --ws-port 0 --udp-port 0 --stun-port 0 >"$work/node.out" 2>"$work/node.err" &
node_pid=$!
ready=$(wait_ready "$work/node.out" "$node_pid")
http=$(field "$ready" http)
ws=$(field "$ready" ws)
udp=$(field "$ready" udp)

"$BARE" >"$work/bare.out" 2>"$work/bare.err" &
bare_pid=$!
bare=$(field "$(wait_ready "$work/bare.out" "$bare_pid")" http)

"$PUT_LOAD" "http://$http" --records "$RECORDS" --batch 100 --concurrency 4 >/dev/null 2>&1

body='{"jsonrpc":"2.0","id":1,"method":"getdbhash","params":{}}'
for m in getdbhash nosuch; do
    cat >"$work/$m.lua" <<EOF
wrk.method = "POST"
wrk.body = '{"jsonrpc":"2.0","id":1,"method":"$m","params":{}}'
wrk.headers["Content-Type"] = "application/json"
EOF
done
# Both answer getdbhash-shaped JSON before the clock starts.
for url in "http://$http" "http://$bare"; do
    answer=$(curl -s -X POST -H 'content-type: application/json' -d "$body" "$url")
    grep -q '"root":"' <<<"$answer" || { echo "$url answered $answer" >&2; exit 1; }
done

HZ=$(getconf CLK_TCK)
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# measure NAME PID: run the load for NAME against the process PID; sets RATE (req/s)
# and CORES (the process's CPU time over the run's wall time).
measure() {
    local name=$1 pid=$2 before after t0 t1 rate out
    before=$(cpu_ticks "$pid")
    t0=$(date +%s.%N)
    case $name in
        bare-http | http | http-nosuch)
            local addr=$http lua=getdbhash
            [[ $name == bare-http ]] && addr=$bare
            [[ $name == http-nosuch ]] && lua=nosuch
            out=$(wrk -t "$LOAD_THREADS" -c "$CONNECTIONS" -d "${SECONDS_EACH}s" -s "$work/$lua.lua" "http://$addr/")
            if grep -q "Non-2xx" <<<"$out"; then echo "$name: $out" >&2; exit 1; fi
            rate=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
            ;;
        ws | udp)
            local url="ws://$ws"
            [[ $name == udp ]] && url="udp://$udp"
            out=$("$LOAD" "$url" --connections "$CONNECTIONS" --seconds "$SECONDS_EACH" --threads "$LOAD_THREADS")
            if [[ $(num "$out" errors) != 0 ]]; then echo "$name: $out" >&2; exit 1; fi
            rate=$(num "$out" perSec)
            echo "$name: $out" >&2
            ;;
    esac
    t1=$(date +%s.%N)
    after=$(cpu_ticks "$pid")
    RATE=$(awk -v r="$rate" 'BEGIN { printf "%.0f", r }')
    CORES=$(awk -v a="$before" -v b="$after" -v t0="$t0" -v t1="$t1" -v hz="$HZ" \
        'BEGIN { printf "%.2f", (b - a) / hz / (t1 - t0) }')
}

declare -A rates cores cpu_us
names=(bare-http http http-nosuch ws udp)
for round in $(seq "$ROUNDS"); do
    for name in "${names[@]}"; do
        pid=$node_pid
        [[ $name == bare-http ]] && pid=$bare_pid
        measure "$name" "$pid"
        echo "round $round: $name $RATE req/s, server CPU $CORES cores" >&2
        rates[$name]="${rates[$name]:-} $RATE"
        cores[$name]="${cores[$name]:-} $CORES"
        cpu_us[$name]="${cpu_us[$name]:-} $(awk -v c="$CORES" -v r="$RATE" 'BEGIN { printf "%.2f", c * 1e6 / r }')"
    done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
ref=$(median <<<"${rates[bare-http]}")

echo
echo "$CONNECTIONS connections, ${SECONDS_EACH} s each, $ROUNDS rounds, $RECORDS records, load generator threads $LOAD_THREADS, $(nproc) cores"
echo
echo "| transport | req/s (median) | each round | ratio to bare axum | server CPU, cores (median) | server CPU µs/request (median) |"
echo "|---|---:|---|---:|---:|---:|"
for name in "${names[@]}"; do
    m=$(median <<<"${rates[$name]}")
    label=$name
    case $name in
        bare-http) label="bare axum handler (HTTP, constant)" ;;
        http) label="HTTP (wrk)" ;;
        http-nosuch) label="HTTP, unknown method: dispatcher without the store (wrk)" ;;
        ws) label="WebSocket (rpc_load)" ;;
        udp) label="UDP, validated (rpc_load)" ;;
    esac
    awk -v l="$label" -v m="$m" -v each="${rates[$name]# }" -v ref="$ref" \
        -v c="$(median <<<"${cores[$name]}")" -v us="$(median <<<"${cpu_us[$name]}")" \
        'BEGIN { gsub(/ /, ", ", each); printf "| %s | %.0f | %s | %.2f | %s | %.1f |\n", l, m, each, m / ref, c, us }'
done
