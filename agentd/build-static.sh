#!/usr/bin/env bash
# Builds moat-agentd as a fully static executable (it must run in any root filesystem) and checks
# the result has no dynamic section and no interpreter. Prints the binary's path on success.
#
# DESIGN.md "Static agentd": musl when that target is installed; otherwise the host glibc target
# with crt-static. Static glibc is fine because agentd uses no NSS (it parses /etc/passwd and
# /etc/group itself). relocation-model=static makes it a plain static executable rather than a
# static PIE, which would carry a dynamic section for self-relocation.
set -euo pipefail
cd "$(dirname "$0")/.."

if rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl; then
  target=x86_64-unknown-linux-musl
else
  target=x86_64-unknown-linux-gnu
fi
export RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static"
cargo build --release --locked -p moat-agentd --target "$target" --target-dir target/static >&2
bin="target/static/$target/release/moat-agentd"

if readelf --dynamic "$bin" | grep -q "Dynamic section"; then
  echo "build-static: $bin has a dynamic section" >&2
  readelf --dynamic "$bin" >&2
  exit 1
fi
if readelf --program-headers "$bin" | grep -qE "INTERP|DYNAMIC"; then
  echo "build-static: $bin has an INTERP or DYNAMIC program header" >&2
  exit 1
fi
echo "build-static: $bin is static ($target, no dynamic section)" >&2
echo "$bin"
