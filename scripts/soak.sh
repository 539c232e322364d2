#!/usr/bin/env bash
# Load soak (issue 7): a local network of SOAK_NODES nodes on 127.0.0.1 (port 0
# everywhere), SOAK_SECS seconds of writes over HTTP, WebSocket and UDP and reads on
# every node, then: acknowledged writes, errors per transport, acknowledged writes
# missing on any node after convergence, nodes that died, RSS per node over time
# (during the load, after the check, and --idle-secs with no load). Exit status
# 1 if a write was lost, a node died or the nodes did not converge. Not part of
# scripts/test.sh (it takes minutes); see node/examples/soak.rs for what it does.
#
# Usage: scripts/soak.sh [extra flags of the soak example, e.g. --writers 8]
# Environment (defaults in brackets):
#   SOAK_SECS     seconds of load                          [60]
#   SOAK_NODES    nodes                                    [5]
#   SOAK_DIR      parent of the nodes' temp dir            [$TMPDIR or /tmp]
#   SOAK_OUT      where the JSON report line goes          [target/soak.json]
#   CIRRUS_CACHE_SIZE, MALLOC_ARENA_MAX  passed on to the nodes [unset]
set -euo pipefail
cd "$(dirname "$0")/.."

SOAK_SECS=${SOAK_SECS:-60}
SOAK_NODES=${SOAK_NODES:-5}
SOAK_DIR=${SOAK_DIR:-${TMPDIR:-/tmp}}
SOAK_OUT=${SOAK_OUT:-target/soak.json}

cargo build --release -p cirrus-node --bin cirrus --example soak
BIN=${CARGO_TARGET_DIR:-target}/release
mkdir -p "$(dirname "$SOAK_OUT")"

# The nodes inherit the environment, so CIRRUS_CACHE_SIZE (MiB) and allocator knobs
# such as MALLOC_ARENA_MAX reach them; the header records them next to the result.
echo "soak: $SOAK_NODES nodes, $SOAK_SECS s; $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg);" \
    "cache-size ${CIRRUS_CACHE_SIZE:-unset (node default)}; MALLOC_ARENA_MAX ${MALLOC_ARENA_MAX:-unset}" >&2
"$BIN/examples/soak" --bin "$BIN/cirrus" --nodes "$SOAK_NODES" --secs "$SOAK_SECS" \
    --dir "$SOAK_DIR" "$@" >"$SOAK_OUT"
echo "report: $SOAK_OUT" >&2
