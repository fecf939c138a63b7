"""Control mode of the unmodified sprites-py SDK: `SpritesClient(control_mode=True)`
runs every command over one pooled `/v1/sprites/{name}/control` WebSocket
instead of one exec WebSocket each.

The SDK falls back to plain exec WebSockets, silently, whenever the control
upgrade is refused (it then clears `sprite._control_mode_supported`), so every
test here also proves that it did not: the flag stays set, and the daemon's
log shows one control connection and no exec WebSocket for the whole run.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import re
from typing import Iterator

import pytest
from sprites import AsyncSpritesClient, ExecError, Sprite, SpritesClient

from conftest import Daemon

BOX = "sdk-control"


@pytest.fixture(scope="module")
def ctl_client(daemon: Daemon) -> Iterator[SpritesClient]:
    c = SpritesClient(daemon.token, base_url=daemon.url, timeout=120, control_mode=True)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
def box(ctl_client: SpritesClient) -> Iterator[Sprite]:
    sprite = ctl_client.create_sprite(BOX)
    try:
        yield sprite
    finally:
        ctl_client.destroy_sprite(BOX)


def upgrades(daemon: Daemon, route: str, name: str = BOX) -> int:
    """How many requests for `route` of sprite `name` the daemon has logged."""
    pattern = re.compile(rf"path=\"?/v1/sprites/{re.escape(name)}/{route}\"?[\s,]")
    return sum(1 for line in daemon.log().splitlines() if pattern.search(line + " "))


def control_ops(daemon: Daemon) -> int:
    return daemon.log().count("control exec started")


def test_commands_run_over_one_control_connection(daemon: Daemon, box: Sprite) -> None:
    assert box.use_control_mode()
    before_exec = upgrades(daemon, "exec")
    before_ops = control_ops(daemon)
    for i in range(10):
        assert box.command("echo", f"round {i}").output() == f"round {i}\n".encode()
    assert box._control_mode_supported, "the SDK fell back to plain exec"
    assert box.has_control_connection()
    # The pool reuses its connection: one upgrade in all, every command an
    # operation on it, and not one exec WebSocket.
    assert upgrades(daemon, "control") == 1, daemon.log()[-4000:]
    assert control_ops(daemon) - before_ops == 10
    assert upgrades(daemon, "exec") == before_exec


def test_exit_codes_and_separate_streams(daemon: Daemon, box: Sprite) -> None:
    with pytest.raises(ExecError) as e:
        box.command("sh", "-c", "echo out; echo err >&2; exit 3").output()
    assert e.value.exit_code() == 3
    assert e.value.stdout == b"out\n"
    assert e.value.stderr == b"err\n"
    for code in (0, 1, 42, 255):
        assert box.run("sh", "-c", f"exit {code}").returncode == code
    done = box.run("sh", "-c", "printf 'a\\000b'; printf 'E' >&2; exit 7", capture_output=True)
    assert (done.returncode, done.stdout, done.stderr) == (7, b"a\x00b", b"E")
    assert box.run("no-such-command-xyz", capture_output=True).returncode == 127
    assert box._control_mode_supported


def test_stdin_env_and_cwd(box: Sprite) -> None:
    data = bytes(range(256)) * 8192 + b"tail"
    out = box.command("sha256sum", stdin=io.BytesIO(data)).output()
    assert out.split()[0].decode() == hashlib.sha256(data).hexdigest()
    out = box.command(
        "sh", "-c", "echo $PWD:$GREETING", env={"GREETING": "hi there"}, cwd="/tmp"
    ).output()
    assert out == b"/tmp:hi there\n"
    # One box: what one operation writes, the next reads.
    box.run("sh", "-c", "echo kept > /tmp/control-state", check=True)
    assert box.command("cat", "/tmp/control-state").output() == b"kept\n"


def test_tty_commands(box: Sprite) -> None:
    size = box.run("stty", "size", tty=True, tty_rows=33, tty_cols=101, capture_output=True)
    assert size.returncode == 0
    assert size.stdout.strip() == b"33 101"
    assert box.run("sh", "-c", "exit 4", tty=True).returncode == 4


def test_stdin_the_command_does_not_read_does_not_leak_into_the_next(box: Sprite) -> None:
    # `head -c 1` exits while the SDK is still sending the rest of its stdin:
    # the exit must arrive, and the leftover frames must not disturb the
    # next operation on the same connection.
    for _ in range(5):
        assert box.command("head", "-c", "1", stdin=io.BytesIO(b"x" * (1 << 20))).output() == b"x"
        assert box.command("echo", "next").output() == b"next\n"


def test_everything_so_far_used_one_control_connection(daemon: Daemon, box: Sprite) -> None:
    assert box._control_mode_supported
    assert upgrades(daemon, "control") == 1
    assert upgrades(daemon, "exec") == 0


def test_the_async_client_uses_control_mode_too(daemon: Daemon, box: Sprite) -> None:
    async def main() -> list[bytes]:
        async with AsyncSpritesClient(
            daemon.token, base_url=daemon.url, timeout=120, control_mode=True
        ) as c:
            sprite = c.sprite(BOX)
            outs = [await sprite.command("echo", str(i)).output() for i in range(5)]
            assert sprite._control_mode_supported
            return outs

    before = upgrades(daemon, "control")
    assert asyncio.run(main()) == [f"{i}\n".encode() for i in range(5)]
    # Its own pool, so one more connection for its five commands.
    assert upgrades(daemon, "control") == before + 1
    assert upgrades(daemon, "exec") == 0
