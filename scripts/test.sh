#!/usr/bin/env bash
# Runs every test of the project: formatting, lints, unit, property and integration
# tests. Installs what the tests need when it is missing, so a fresh machine needs
# nothing but this script.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "toolchain components"
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy

step "python3 websockets (node/tests/transports.rs)"
if ! python3 -c 'import websockets' 2>/dev/null; then
    # A system Python under PEP 668 refuses a plain install; fall back to the user site.
    python3 -m pip install -q websockets ||
        python3 -m pip install -q --user --break-system-packages websockets
fi

step "install test dependencies (coturn, Python aioice: node/tests/stun.rs uses them)"
sudo=; [ "$(id -u)" -eq 0 ] || sudo=sudo
if ! command -v turnserver >/dev/null || ! command -v turnutils_stunclient >/dev/null; then
    apt_install() { $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q coturn; }
    apt_install || { $sudo apt-get update -q && apt_install; }
    # Debian's package leaves its daemon off (TURNSERVER_ENABLED in /etc/default/coturn);
    # on a systemd host stop it anyway so nothing holds 3478. The tests start their own.
    if command -v systemctl >/dev/null && systemctl is-active --quiet coturn 2>/dev/null; then
        $sudo systemctl disable --now coturn
    fi
fi
python3 -c 'import aioice.stun' 2>/dev/null ||
    PIP_ROOT_USER_ACTION=ignore python3 -m pip install -q --disable-pip-version-check aioice

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo test"
cargo test --workspace

step "NAT lab smoke (testnet/natlab.sh --smoke: namespaces, nftables NAT, hole punching)"
if [ "$(id -u)" -ne 0 ]; then
    echo "SKIPPED the NAT lab: it needs root (network namespaces, nftables)"
else
    if ! command -v nft >/dev/null || ! command -v ip >/dev/null; then
        { apt-get update -qq && apt-get install -y -qq nftables iproute2 >/dev/null; } || true
    fi
    probe="natlab-probe-$$"
    if command -v nft >/dev/null && ip netns add "$probe" 2>/dev/null; then
        lab_ok=0
        ip netns exec "$probe" nft add table ip probe 2>/dev/null && lab_ok=1
        ip netns del "$probe"
    else
        lab_ok=0
    fi
    if [ "$lab_ok" = 1 ]; then
        cargo build -q -p cirrus-node
        # Once with routers that drop unsolicited packets (the default), once with
        # routers whose own stack answers them, which is where a late punch loses
        # its port to conntrack (docs/nat.md).
        CIRRUS_BIN="${CARGO_TARGET_DIR:-target}/debug/cirrus" testnet/natlab.sh --smoke
        CIRRUS_BIN="${CARGO_TARGET_DIR:-target}/debug/cirrus" testnet/natlab.sh --smoke --wan-input accept
    else
        echo "SKIPPED the NAT lab: 'ip netns add' or nftables does not work on this machine"
    fi
fi

step "fuzz every target for a short while (fuzz/, cargo-fuzz; docs/fuzzing.md has the long runs)"
if cargo fuzz --version >/dev/null 2>&1; then
    mkdir -p target
    for t in stun_decode udp_frame jsonrpc_request record_decode; do
        mkdir -p "fuzz/corpus/$t"
        secs=10; [ "$t" = stun_decode ] && secs=20
        if RUSTC_BOOTSTRAP=1 cargo fuzz run "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" \
            -- -max_total_time=$secs >"target/fuzz-$t.log" 2>&1; then
            echo "$t: $(grep -E '^Done|DONE' "target/fuzz-$t.log" | tail -n 1 || true)"
        else
            tail -n 60 "target/fuzz-$t.log"
            echo "the $t fuzzer failed: inputs in fuzz/artifacts/$t/" >&2
            exit 1
        fi
    done
else
    echo "SKIPPED: cargo-fuzz is not installed (cargo install cargo-fuzz to run this step)"
fi

step "testnet smoke (the README's main command)"
cargo build -q -p cirrus-node
scripts/testnet-smoke.sh

echo
echo "all tests passed"
