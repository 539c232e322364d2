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

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo test"
cargo test --workspace

step "testnet smoke (the README's main command)"
cargo build -q -p cirrus-node
scripts/testnet-smoke.sh

echo
echo "all tests passed"
