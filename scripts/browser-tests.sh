#!/usr/bin/env bash
# What needs a running testnet and a real browser: a 3-node testnet on its own
# loopback addresses (127.0.0.171..173) and folder, then
#   - /metrics of every node through `promtool check metrics`, and /health;
#   - the dashboard in headless Chromium (node/tests/browser/dashboard.mjs);
#   - the browser client and its example page, from another origin
#     (clients/js/test/browser.mjs).
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
trap 'scripts/testnet.sh reset >/dev/null 2>&1 || true' EXIT

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

