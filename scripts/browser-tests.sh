#!/usr/bin/env bash
# What needs a running testnet and a real browser: a 3-node testnet on its own
# loopback addresses (127.0.0.171..173) and folder, then
#   - /metrics of every node through `promtool check metrics`, and /health;
#   - the dashboard in headless Chromium (node/tests/browser/dashboard.mjs);
#   - the browser client and its example page, from another origin
#     (clients/js/test/browser.mjs), with a fourth node apart from the testnet
#     (127.0.0.174) whose root differs.
# Screenshots go to $CIRRUS_SCREENSHOTS (default target/screenshots/).
#
#   scripts/browser-tests.sh [CIRRUS_BINARY]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$(realpath "${1:-${CARGO_TARGET_DIR:-target}/debug/cirrus}")
SHOTS=$(realpath -m "${CIRRUS_SCREENSHOTS:-${CARGO_TARGET_DIR:-target}/screenshots}")
mkdir -p "$SHOTS"
export CIRRUS_BIN=$BIN CIRRUS_TESTNET_BASE=170
CIRRUS_TESTNET_DIR=$(mktemp -d)
export CIRRUS_TESTNET_DIR
ODD_DIR=$(mktemp -d)
ODD_PID=
cleanup() {
  [ -n "$ODD_PID" ] && kill "$ODD_PID" 2>/dev/null && wait "$ODD_PID" 2>/dev/null
  rm -rf "$ODD_DIR"
  scripts/testnet.sh reset >/dev/null 2>&1 || true
}
trap cleanup EXIT

scripts/testnet.sh up 3
NODES=http://127.0.0.171:38081,http://127.0.0.172:38081,http://127.0.0.173:38081

for url in ${NODES//,/ }; do
  curl -sf "$url/metrics" | promtool check metrics || { echo "promtool: $url/metrics" >&2; exit 1; }
  health=$(curl -sf "$url/health") || { echo "$url/health is not 200" >&2; exit 1; }
  python3 -c 'import json,sys; h=json.loads(sys.argv[1]); sys.exit(0 if h["ok"] and h["status"] == "ok" else 1)' "$health" \
    || { echo "$url/health: $health" >&2; exit 1; }
done
echo "metrics of 3 nodes pass promtool; health ok"

CIRRUS_NODES=$NODES CIRRUS_SCREENSHOTS=$SHOTS/dashboard node node/tests/browser/dashboard.mjs

# A node apart from the testnet, holding a record of its own so that its root
# differs: the browser client's verified read must name it.
ODD=http://127.0.0.174:38081
"$BIN" run --data-dir "$ODD_DIR/data" --bind 127.0.0.174 --no-redial > "$ODD_DIR/out" 2> "$ODD_DIR/log" &
ODD_PID=$!
for _ in $(seq 1 100); do [ -s "$ODD_DIR/out" ] && break; sleep 0.1; done
[ -s "$ODD_DIR/out" ] || { echo "the odd node did not start; see $ODD_DIR/log" >&2; exit 1; }
HOME=$ODD_DIR "$BIN" keygen > /dev/null 2>&1
HOME=$ODD_DIR "$BIN" put apart "only on the odd node" --node "$ODD" > /dev/null

CIRRUS_NODES=$NODES CIRRUS_ODD=$ODD CIRRUS_SCREENSHOTS=$SHOTS/client node clients/js/test/browser.mjs
