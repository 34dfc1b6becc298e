#!/usr/bin/env bash
# Builds and runs ci/outside-crate as a user's crate would be: outside the
# workspace, depending on nncore by path, resolved afresh (no lock file),
# with the edition given as $1 (2021 or 2024). Shares the workspace's target
# directory so that dependencies already built are reused.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
edition="$1"
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
cp -r "$root/ci/outside-crate/src" "$dir/src"
cat > "$dir/Cargo.toml" <<TOML
[package]
name = "outside-crate"
version = "0.1.0"
edition = "$edition"
publish = false

[dependencies]
nncore = { path = "$root/nncore" }

[workspace]
TOML
cd "$dir"
CARGO_TARGET_DIR="$root/target" cargo run --quiet
