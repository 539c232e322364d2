#!/usr/bin/env bash
# STUN Binding over UDP, side by side in one run: our server (a release `cirrus run`)
# against coturn's turnserver (STUN only), on loopback, under the same closed-loop
# load (node/examples/stun_load.rs). Servers take turns, ROUNDS times; the table
# shows the median of the rounds.
#
#   scripts/bench-stun.sh                       # defaults below
#   SOCKETS=64 SECS=10 ROUNDS=5 scripts/bench-stun.sh
#
# coturn runs twice: with its default thread settings (relay threads = CPUs; on
# Linux >= 3.9 each has its own SO_REUSEPORT socket on the listening port, so UDP
# STUN is served by that many threads) and with `--relay-threads 1`.
# Server CPU is read from /proc/PID/stat around each load run (all threads).
set -euo pipefail
cd "$(dirname "$0")/.."

SOCKETS=${SOCKETS:-32}    # concurrent client sockets, one request in flight each
SECS=${SECS:-5}           # seconds per load run
ROUNDS=${ROUNDS:-3}       # turns per server
GEN_THREADS=${GEN_THREADS:-1}  # load generator's tokio worker threads

command -v turnserver >/dev/null || {
    echo "turnserver (Debian package coturn) is missing: apt-get install coturn" >&2
    exit 1
}

cargo build --release -q -p cirrus-node --bin cirrus --example stun_load
target=${CARGO_TARGET_DIR:-target}/release
cirrus=$target/cirrus
load=$target/examples/stun_load

tmp=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket
while True:
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", 0)); p = u.getsockname()[1]
    t = socket.socket()
    try:
        t.bind(("127.0.0.1", p)); print(p); break
    except OSError:
        pass'
}

# Our node: every port but STUN is 0 (whatever this build has).
cirrus_port=$(free_port)
extra=()
for flag in ws-port udp-port; do
    "$cirrus" run --help | grep -q -- "--$flag" && extra+=("--$flag" 0)
done
RUST_LOG=warn "$cirrus" run --bind 127.0.0.1 --http-port 0 --p2p-port 0 \
    --stun-port "$cirrus_port" "${extra[@]}" --data-dir "$tmp/node" \
    >"$tmp/node.out" 2>"$tmp/node.err" &
cirrus_pid=$!
pids+=("$cirrus_pid")

start_turn() { # name port [extra args]
    local name=$1 port=$2
    shift 2
    turnserver -n --listening-ip 127.0.0.1 --listening-port "$port" \
        --no-tls --no-dtls --no-auth --stun-only --no-cli \
        --log-file stdout --simple-log --pidfile "$tmp/$name.pid" "$@" \
        >"$tmp/$name.log" 2>&1 &
    last_pid=$!
    pids+=("$last_pid")
}
turn_port=$(free_port)
start_turn coturn "$turn_port"
turn_pid=$last_pid
turn1_port=$(free_port)
start_turn coturn-m1 "$turn1_port" --relay-threads 1
turn1_pid=$last_pid

wait_stun() { # port: poll with real requests until the server answers
    for _ in $(seq 50); do
        "$cirrus" stun "127.0.0.1:$1" --timeout 0.5 >/dev/null 2>&1 && return 0
    done
    echo "no STUN server answers on 127.0.0.1:$1" >&2
    cat "$tmp"/*.log "$tmp/node.err" >&2 || true
    exit 1
}
wait_stun "$cirrus_port"
wait_stun "$turn_port"
wait_stun "$turn1_port"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

echo "# $(date -u +%FT%TZ) $(uname -srm), $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "# cirrus $("$cirrus" --version 2>/dev/null || echo '?'); $(turnserver --version 2>/dev/null | head -1 | sed 's/^/coturn /')"
echo "# load: $SOCKETS sockets, ${SECS}s per run, $ROUNDS rounds, generator threads $GEN_THREADS"
results=$tmp/results.jsonl
for round in $(seq "$ROUNDS"); do
    for spec in "cirrus:$cirrus_port:$cirrus_pid" "coturn:$turn_port:$turn_pid" \
        "coturn-m1:$turn1_port:$turn1_pid"; do
        IFS=: read -r name port pid <<<"$spec"
        before=$(cpu_ticks "$pid")
        line=$("$load" --server "127.0.0.1:$port" --sockets "$SOCKETS" --secs "$SECS" \
            --threads "$GEN_THREADS" --label "$name")
        after=$(cpu_ticks "$pid")
        echo "$line" | python3 -c 'import json, sys
r = json.loads(sys.stdin.read()); r["round"] = int(sys.argv[1])
r["cpu_s"] = (int(sys.argv[3]) - int(sys.argv[2])) / int(sys.argv[4])
print(json.dumps(r))' "$round" "$before" "$after" "$hz" | tee -a "$results"
    done
done

python3 - "$results" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
by = {}
for r in rows:
    by.setdefault(r["server"], []).append(r)
med = lambda rs, k: statistics.median(r[k] for r in rs)
base = med(by["coturn"], "rps")
print()
print(f"| server | req/s | p50 µs | p99 µs | p99.9 µs | lost | server CPU | CPU µs/req | req/s vs coturn |")
print(f"|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for name in ["cirrus", "coturn", "coturn-m1"]:
    rs = by[name]
    rps = med(rs, "rps")
    cpu = statistics.median(r["cpu_s"] / r["secs"] for r in rs)
    per = statistics.median(r["cpu_s"] * 1e6 / max(r["answered"], 1) for r in rs)
    lost = sum(r["lost"] + r["bad"] for r in rs)
    label = {"coturn": "coturn (default threads)", "coturn-m1": "coturn --relay-threads 1"}.get(name, "cirrus")
    print(f"| {label} | {rps:,.0f} | {med(rs, 'p50_us'):.0f} | {med(rs, 'p99_us'):.0f} | "
          f"{med(rs, 'p999_us'):.0f} | {lost} | {cpu:.0%} | {per:.1f} | {rps / base:.2f} |")
EOF
