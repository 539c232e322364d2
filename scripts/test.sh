#!/usr/bin/env bash
# Runs every test of the project: formatting, lints, unit, property and integration
# tests, the browser tests, the NAT lab, the fuzzers, the testnet smoke. Installs
# what the tests need when it is missing, so a fresh machine needs nothing but this
# script.
#
# A step that cannot run on this machine (the NAT lab without root) is skipped, and
# the last line names every skipped step. Under CI=true a step this machine could
# run may not be skipped: an install that fails fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=${CARGO_TARGET_DIR:-target}
SKIPPED=()
step() { printf '\n== %s\n' "$*"; }
skip() { echo "SKIPPED: $1"; SKIPPED+=("$1"); }
die() { echo "FAILED: $*" >&2; exit 1; }
sudo=; [ "$(id -u)" -eq 0 ] || sudo=sudo

# Debian packages, installed once (one apt-get update at most).
APT_UPDATED=0
apt_install() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "installing ${missing[*]}"
  if ! $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; then
    [ "$APT_UPDATED" = 1 ] && return 1
    $sudo apt-get update -q >/dev/null && APT_UPDATED=1
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

step "toolchain components"
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy

step "test dependencies: coturn, promtool, chromium, nftables, iproute2, miniupnpd; Python websockets, aioice; npm packages"
apt_install coturn prometheus chromium nftables iproute2 miniupnpd-nftables || die "cannot install the Debian packages the tests use"
# Debian's coturn package leaves its daemon off (TURNSERVER_ENABLED in /etc/default/coturn);
# on a systemd host stop it anyway so nothing holds 3478. The tests start their own.
if command -v systemctl >/dev/null && systemctl is-active --quiet coturn 2>/dev/null; then
  $sudo systemctl disable --now coturn
fi
if command -v systemctl >/dev/null && systemctl is-active --quiet prometheus 2>/dev/null; then
  $sudo systemctl disable --now prometheus
fi
pip_install() {
  python3 -c "import $1" 2>/dev/null && return 0
  # A system Python under PEP 668 refuses a plain install; fall back to the user site.
  PIP_ROOT_USER_ACTION=ignore python3 -m pip install -q --disable-pip-version-check "$2" ||
    PIP_ROOT_USER_ACTION=ignore python3 -m pip install -q --disable-pip-version-check --user --break-system-packages "$2"
}
pip_install websockets websockets || die "cannot install the Python package websockets"
pip_install aioice.stun aioice || die "cannot install the Python package aioice"
pip_install jsonschema jsonschema || die "cannot install the Python package jsonschema"
for dir in clients/js node/tests/browser; do
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error) || die "npm ci in $dir"
done

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo test"
cargo test --workspace

step "JavaScript client: unit tests (node --test)"
(cd clients/js && node --test --test-reporter=dot test/*.test.js)

step "build the node for the script tests"
cargo build -q -p cirrus-node
BIN="$TARGET/debug/cirrus"

step "in a real browser: the dashboard, the browser client; /metrics through promtool (a 3-node testnet)"
scripts/browser-tests.sh "$BIN"

step "NAT lab smoke (testnet/natlab.sh --smoke: namespaces, nftables NAT, hole punching)"
if [ "$(id -u)" -ne 0 ]; then
  skip "the NAT lab (it needs root: network namespaces, nftables)"
else
  probe="natlab-probe-$$"
  ip netns add "$probe" || die "'ip netns add' fails as root"
  ip netns exec "$probe" nft add table ip probe || { ip netns del "$probe"; die "nftables does not work in a namespace"; }
  ip netns del "$probe"
  # Once with routers that drop unsolicited packets (the default), once with
  # routers whose own stack answers them, which is where a late punch loses its
  # port to conntrack (docs/nat.md).
  CIRRUS_BIN="$BIN" testnet/natlab.sh --smoke
  CIRRUS_BIN="$BIN" testnet/natlab.sh --smoke --wan-input accept
  # And with stock miniupnpd on the nodes' routers: every cell direct, over both
  # transports, symmetric to symmetric included (docs/nat.md, "Port mapping").
  CIRRUS_BIN="$BIN" testnet/natlab.sh --smoke --port-mapping --transports udp,tcp
  # And with the NATs on one segment (no router between them), silent routers:
  # the same paths as with one (docs/nat.md, "Two answering routers on one segment").
  CIRRUS_BIN="$BIN" testnet/natlab.sh --smoke --flat
  # And over IPv6: no NAT, stateful firewalls; every cell direct over IPv6, UDP
  # and TCP (docs/nat.md, "IPv6").
  CIRRUS_BIN="$BIN" testnet/natlab.sh --smoke --ipv6
  # And with every core link 20 ms each way (80 ms round trip from a client to a
  # node): the same paths when the punch's packets are in flight for a while
  # (docs/nat.md, "Latency").
  if [ -c /dev/net/tun ]; then
    CIRRUS_BIN="$BIN" testnet/natlab.sh --smoke --latency 20
  else
    skip "the NAT lab with latency (it needs /dev/net/tun for its delayed links)"
  fi
fi

step "fuzz every target for a short while (fuzz/, cargo-fuzz; docs/fuzzing.md has the long runs)"
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz"
  cargo install -q --locked cargo-fuzz || die "cannot install cargo-fuzz"
fi
mkdir -p "$TARGET"
for t in stun_decode udp_frame jsonrpc_request record_decode gossip_batch sync_sketch; do
  mkdir -p "fuzz/corpus/$t"
  secs=10; [ "$t" = stun_decode ] && secs=20
  if RUSTC_BOOTSTRAP=1 cargo fuzz run "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" \
      -- -max_total_time=$secs >"$TARGET/fuzz-$t.log" 2>&1; then
    echo "$t: $(grep -E '^Done|DONE' "$TARGET/fuzz-$t.log" | tail -n 1 || true)"
  else
    tail -n 60 "$TARGET/fuzz-$t.log"
    die "the $t fuzzer failed: inputs in fuzz/artifacts/$t/"
  fi
done

step "testnet smoke (the README's main command)"
scripts/testnet-smoke.sh

echo
if [ ${#SKIPPED[@]} -eq 0 ]; then
  echo "all tests passed"
else
  [ "${CI:-}" = true ] && [ "$(id -u)" -eq 0 ] && die "steps were skipped under CI: ${SKIPPED[*]}"
  printf 'all tests passed, but skipped: %s\n' "$(IFS=';'; echo "${SKIPPED[*]}")"
fi
