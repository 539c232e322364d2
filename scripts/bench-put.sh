#!/usr/bin/env bash
# Single-node put throughput over HTTP (issue 2): for each batch size, start a fresh
# node on a temp data dir, run the put_load example against it, stop the node, and
# print one table row per batch size.
#
# Usage: scripts/bench-put.sh
# Environment (defaults in brackets):
#   BATCHES          batch sizes to run                     ["1 10 100"]
#   RECORDS          records per row                        [20000]
#   RECORDS_BATCH1   records for the batch=1 row            [5000]
#   CONCURRENCY      concurrent connections                 [16]
#   BENCH_DIR        parent of the temp data dirs           [$TMPDIR or /tmp]
#   CIRRUS           the node binary, to compare builds     [the release build]
#   PERF_BATCH       if set, `perf record` the node during the row with this batch
#                    size; the data goes to $PERF_OUT [$BENCH_DIR/perf-put.data]
set -euo pipefail

cd "$(dirname "$0")/.."
BATCHES=${BATCHES:-"1 10 100"}
RECORDS=${RECORDS:-20000}
RECORDS_BATCH1=${RECORDS_BATCH1:-5000}
CONCURRENCY=${CONCURRENCY:-16}
BENCH_DIR=${BENCH_DIR:-${TMPDIR:-/tmp}}
PERF_OUT=${PERF_OUT:-$BENCH_DIR/perf-put.data}

cargo build --release --bins --examples
BIN=${CARGO_TARGET_DIR:-target}/release
CIRRUS=${CIRRUS:-$BIN/cirrus}
LOAD=$BIN/examples/put_load

node_pid=""
data_dir=""
cleanup() {
    if [[ -n $node_pid ]] && kill -0 "$node_pid" 2>/dev/null; then
        kill -TERM "$node_pid" 2>/dev/null || true
        wait "$node_pid" 2>/dev/null || true
    fi
    if [[ -n $data_dir ]]; then rm -rf "$data_dir"; fi
    node_pid=""
    data_dir=""
}
trap cleanup EXIT

# Start a node on a fresh data dir; sets node_pid, data_dir and url.
start_node() {
    data_dir=$(mktemp -d "$BENCH_DIR/cirrus-bench-put.XXXXXX")
    : >"$data_dir/stdout"
    "$CIRRUS" run --data-dir "$data_dir/data" --bind 127.0.0.1 --http-port 0 \
        >"$data_dir/stdout" 2>"$data_dir/stderr" &
    node_pid=$!
    local addr=""
    for _ in $(seq 100); do
        addr=$(sed -n 's/.*"event":"ready".*"http":"\([^"]*\)".*/\1/p' "$data_dir/stdout")
        if [[ -n $addr ]]; then break; fi
        if ! kill -0 "$node_pid" 2>/dev/null; then cat "$data_dir/stderr" >&2; exit 1; fi
        sleep 0.1
    done
    [[ -n $addr ]] || { echo "node did not print its ready line" >&2; exit 1; }
    url="http://$addr"
}

HZ=$(getconf CLK_TCK)
cpu_ticks() { # user + system CPU ticks of process $1 so far
    awk '{ print $14 + $15 }' "/proc/$1/stat"
}

json_field() { # json_field LINE NAME -> the number after "NAME":
    sed -n "s/.*\"$2\":\([0-9.eE+-]*\).*/\1/p" <<<"$1"
}

rows=()
for b in $BATCHES; do
    n=$RECORDS
    if [[ $b == 1 ]]; then n=$RECORDS_BATCH1; fi
    start_node
    perf_pid=""
    if [[ -n ${PERF_BATCH:-} && $b == "$PERF_BATCH" ]]; then
        perf record -F 999 -g -o "$PERF_OUT" -p "$node_pid" 2>/dev/null &
        perf_pid=$!
        sleep 0.5
    fi
    cpu_before=$(cpu_ticks "$node_pid")
    echo "batch $b: $n records, $CONCURRENCY connections, node at $url" >&2
    line=$("$LOAD" "$url" --records "$n" --batch "$b" --concurrency "$CONCURRENCY")
    node_cpu=$(awk -v a="$cpu_before" -v b="$(cpu_ticks "$node_pid")" -v hz="$HZ" -v n="$n" \
        'BEGIN { printf "%.1f", (b - a) / hz * 1e6 / n }')
    if [[ -n $perf_pid ]]; then
        kill -INT "$perf_pid" 2>/dev/null || true
        wait "$perf_pid" 2>/dev/null || true
        echo "perf profile of the node written to $PERF_OUT" >&2
    fi
    db_bytes=$(stat -c %s "$data_dir/data/cirrus.redb")
    cleanup
    rows+=("$b $(json_field "$line" concurrency) $(json_field "$line" records) \
$(json_field "$line" seconds) $(json_field "$line" putsPerSec) \
$(json_field "$line" meanLatencyMs) $db_bytes $node_cpu \
$(json_field "$line" clientCpuUsPerRecord)")
done

# The batch=100 rate, for the ratio column (empty if that row was not run).
ref=""
for r in "${rows[@]}"; do
    read -r b _ _ _ rate _ <<<"$r"
    if [[ $b == 100 ]]; then ref=$rate; fi
done

echo
echo "| batch size | concurrency | records | seconds | puts/s | ratio to batch=100 | mean request latency ms | db MB | node CPU µs/record | load generator CPU µs/record |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for r in "${rows[@]}"; do
    read -r b c n s rate lat db ncpu ccpu <<<"$r"
    ratio="–"
    if [[ -n $ref ]]; then ratio=$(awk -v a="$rate" -v b="$ref" 'BEGIN { printf "%.3f", a / b }'); fi
    awk -v b="$b" -v c="$c" -v n="$n" -v s="$s" -v rate="$rate" -v ratio="$ratio" \
        -v lat="$lat" -v db="$db" -v ncpu="$ncpu" -v ccpu="$ccpu" \
        'BEGIN { printf "| %d | %d | %d | %.2f | %.0f | %s | %.1f | %.1f | %.0f | %.0f |\n", b, c, n, s, rate, ratio, lat, db / 1e6, ncpu, ccpu }'
done
