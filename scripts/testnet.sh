#!/usr/bin/env bash
# A local Cirrus testnet: N nodes on 127.0.0.11, 127.0.0.12, ... with the default
# ports (swarm 38080, HTTP 38081). Data and logs live under one folder
# ($CIRRUS_TESTNET_DIR, default .testnet/), one subfolder per node.
#
#   scripts/testnet.sh up [N]   start N nodes (default 3); node 1 is everyone's bootstrap
#   scripts/testnet.sh status   the `cirrus compare` table over all nodes (exit 0 if they agree)
#   scripts/testnet.sh watch    that table again every 2 s, until Ctrl-C
#   scripts/testnet.sh down     stop the nodes (data stays; `up` again resumes it)
#   scripts/testnet.sh reset    stop the nodes and delete the folder
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=${CIRRUS_TESTNET_DIR:-.testnet}
BIN=${CIRRUS_BIN:-${CARGO_TARGET_DIR:-target}/release/cirrus}
# Node i listens on 127.0.0.(BASE+i); another BASE lets two testnets coexist.
BASE=${CIRRUS_TESTNET_BASE:-10}

ip_of() { echo "127.0.0.$((BASE + $1))"; }
node_ids() { for f in "$DIR"/node*/pid; do [ -e "$f" ] && basename "$(dirname "$f")" | tr -dc 0-9 && echo; done | sort -n; }
running() { [ -f "$DIR/node$1/pid" ] && kill -0 "$(cat "$DIR/node$1/pid")" 2>/dev/null; }

# Wait until node $1 answers GET /health with 200; print its getnodeinfo.
wait_ready() {
  local url="http://$(ip_of "$1"):38081" i
  for i in $(seq 1 200); do
    if python3 -c "$READY_PY" "$url" 2>/dev/null; then return 0; fi
    running "$1" || { echo "node $1 exited; see $DIR/node$1/log" >&2; tail -n 5 "$DIR/node$1/log" >&2; return 1; }
    sleep 0.1
  done
  echo "node $1 did not get healthy in 20 s; see $DIR/node$1/log" >&2
  return 1
}
READY_PY='
import json, sys, urllib.request
url = sys.argv[1]
with urllib.request.urlopen(url + "/health", timeout=2) as r:
    assert r.status == 200
req = urllib.request.Request(url, data=b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"getnodeinfo\"}",
                             headers={"content-type": "application/json"})
with urllib.request.urlopen(req, timeout=2) as r:
    print(json.dumps(json.load(r)["result"]))
'

up() {
  local n=${1:-3}
  [[ "$n" =~ ^[0-9]+$ ]] && [ "$n" -ge 1 ] && [ $((BASE + n)) -le 254 ] || { echo "N must be 1 to $((254 - BASE))" >&2; exit 2; }
  if [ -z "${CIRRUS_BIN:-}" ] && { [ ! -x "$BIN" ] || [ -n "$(find node/src proto/src -newer "$BIN" -name '*.rs' 2>/dev/null | head -1)" ]; }; then
    echo "building $BIN ..." >&2
    cargo build --release -q -p cirrus-node
  fi
  mkdir -p "$DIR"
  local boot="" i
  for i in $(seq 1 "$n"); do
    local d="$DIR/node$i" ip
    ip=$(ip_of "$i")
    if running "$i"; then echo "node $i already running" >&2; continue; fi
    mkdir -p "$d"
    : > "$d/stdout"
    local args=(run --data-dir "$d/data" --bind "$ip")
    [ -n "$boot" ] && args+=(--bootstrap "$boot")
    RUST_LOG=${RUST_LOG:-info} nohup "$BIN" "${args[@]}" > "$d/stdout" 2> "$d/log" < /dev/null &
    echo $! > "$d/pid"
    local info
    info=$(wait_ready "$i")
    if [ "$i" -eq 1 ]; then
      boot=$(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print(next(a for a in r["listen"] if "/tcp/" in a) + "/p2p/" + r["peerId"])' "$info")
    fi
    echo "node $i  http://$ip:38081/  $(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["peerId"])' "$info")"
  done
  echo "testnet up: $n nodes, data and logs in $DIR/"
  echo "dashboards: open the http:// URLs above in a browser; metrics at /metrics, health at /health"
  echo "try: $BIN call getpeerinfo --node http://$(ip_of 1):38081"
}

status() {
  local args=() i
  for i in $(node_ids); do args+=(--node "http://$(ip_of "$i"):38081"); done
  [ ${#args[@]} -gt 0 ] || { echo "no testnet in $DIR" >&2; exit 1; }
  "$BIN" compare "${args[@]}"
}

watch_status() {
  while true; do
    clear 2>/dev/null || true
    date
    status || true
    sleep 2
  done
}

down() {
  local i pid
  for i in $(node_ids); do
    pid=$(cat "$DIR/node$i/pid")
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid"
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    fi
    rm -f "$DIR/node$i/pid"
  done
  echo "testnet down (data kept in $DIR/)"
}

case "${1:-}" in
  up) up "${2:-3}" ;;
  status) status ;;
  watch) watch_status ;;
  down) down ;;
  reset) down; rm -rf "$DIR"; echo "removed $DIR/" ;;
  *) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
