#!/usr/bin/env bash
# microsandbox's own SDK clients against moat: the raw AgentClient of the Python package
# (PyPI microsandbox 0.7.11, the newest there) and of the Node package (npm microsandbox 0.6.18,
# the newest there, with its prebuilt linux-x64 addon) each connect to a moat sandbox's relay
# socket and must negotiate generation 10 and its flow control (see the two scripts).
#
# Usage: tests/sdk-compat/run.sh [MOAT_BIN]   (as root: it creates a namespace sandbox)
# Exit status: 0 passed, 1 a check failed, 3 skipped (the reason on stderr: the packages could
# not be installed, or this is not x86_64).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
moat=${1:-$repo/target/debug/moat}
cache=${MOAT_SDK_COMPAT_CACHE:-$repo/target/sdk-compat}
py_version=0.7.11
node_version=0.6.18

skip() { echo "sdk-compat: skipped: $*" >&2; exit 3; }
[ "$(uname -m)" = x86_64 ] || skip "the packages' native parts are built for x86_64, this is $(uname -m)"
[ -x "$moat" ] || { echo "sdk-compat: no moat binary at $moat" >&2; exit 1; }

mkdir -p "$cache"
venv=$cache/py-$py_version
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import microsandbox.agent, cbor2' 2>/dev/null; then
  rm -rf "$venv"
  python3 -m venv "$venv" || skip "python3 -m venv failed (apt-get install python3-venv)"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "microsandbox==$py_version" cbor2 \
    || { rm -rf "$venv"; skip "pip could not install microsandbox==$py_version and cbor2"; }
fi
nodedir=$cache/node-$node_version
if [ ! -f "$nodedir/node_modules/microsandbox/dist/index.js" ] \
  || [ ! -f "$nodedir/node_modules/@superradcompany/microsandbox-linux-x64-gnu/microsandbox.linux-x64-gnu.node" ]; then
  command -v npm >/dev/null || skip "npm is not installed"
  rm -rf "$nodedir" && mkdir -p "$nodedir" && echo '{"private":true}' >"$nodedir/package.json"
  # --force: the package asks for node >= 22 and npm then leaves its optional addon out; on
  # node 20 the addon loads and these checks pass, so install it by name.
  (cd "$nodedir" && npm install --silent --no-audit --no-fund --force \
    "microsandbox@$node_version" "@superradcompany/microsandbox-linux-x64-gnu@$node_version") \
    || { rm -rf "$nodedir"; skip "npm could not install microsandbox@$node_version"; }
fi

export MOAT_HOME
MOAT_HOME=$(mktemp -d /tmp/moat-sdk-compat.XXXXXX)
name=sdk-compat-$$
cleanup() { "$moat" rm -f "$name" >/dev/null 2>&1 || true; rm -rf "$MOAT_HOME"; }
trap cleanup EXIT
"$moat" create "$name" >/dev/null
socket=$("$moat" socket "$name")

echo "-- Python AgentClient (microsandbox $py_version)"
"$venv/bin/python" "$here/python_agent_client.py" "$socket"
echo "-- Node AgentClient (microsandbox $node_version)"
MSB_NODE_PREFIX=$nodedir timeout 180 node "$here/node_agent_client.mjs" "$socket"
