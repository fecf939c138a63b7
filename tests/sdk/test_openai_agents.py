"""The OpenAI Agents SDK's Sprites sandbox (`sprites-openai-agents`, pinned in
scripts/test.sh) against a real daemon, driven directly, with no model: its
session runs every command over the control WebSocket (`sprites-py` in control
mode) and reads and writes files through the filesystem API (`/fs/read`,
`/fs/write`); workspace persistence is a tar of the workspace made by a command
and moved through the filesystem API; checkpoints go through `sprites-py`.
"""

from __future__ import annotations

import asyncio
import io
import re
from pathlib import Path
from typing import Any, Awaitable, Callable, TypeVar

import httpx
import pytest

from conftest import Daemon

from agents.sandbox import ExecTimeoutError, LocalSnapshotSpec  # noqa: E402
from sprites_openai_agents import (  # noqa: E402
    SpritesCheckpoints,
    SpritesSandboxClient,
    SpritesSandboxClientOptions,
)

T = TypeVar("T")


def run(coro: Awaitable[T]) -> T:
    return asyncio.run(coro)  # type: ignore[arg-type]


def upgrades(daemon: Daemon, name: str, route: str) -> int:
    pattern = re.compile(rf"path=\"?/v1/sprites/{re.escape(name)}/{route}\"?[\s,]")
    return sum(1 for line in daemon.log().splitlines() if pattern.search(line + " "))


def sandbox(daemon: Daemon) -> SpritesSandboxClient:
    return SpritesSandboxClient(token=daemon.token, base_url=daemon.url)


async def with_session(
    daemon: Daemon,
    fn: Callable[[Any], Awaitable[T]],
    *,
    snapshot: Any = None,
) -> T:
    """A started session on a fresh sprite (which the session creates),
    shut down (sprite deleted) afterwards."""
    client = sandbox(daemon)
    session = await client.create(
        options=SpritesSandboxClientOptions(idle_close_seconds=0), snapshot=snapshot
    )
    try:
        await session.start()
        return await fn(session)
    finally:
        await client.delete(session)


def sprite_name(session: Any) -> str:
    return str(session.state.sprite_name)


def test_commands_run_over_the_control_websocket(daemon: Daemon) -> None:
    async def body(session: Any) -> None:
        name = sprite_name(session)
        r = await session.exec("echo hello; echo oops >&2; exit 3")
        assert (r.stdout, r.stderr, r.exit_code) == (b"hello\n", b"oops\n", 3)
        r = await session.exec("pwd")
        assert r.stdout == b"/workspace\n" and r.ok()
        r = await session.exec("printf", "%s|", "a b", "c", shell=False)
        assert r.stdout == b"a b|c|"
        # The workspace keeps what commands leave in it.
        await session.exec("echo one > notes.txt")
        assert (await session.exec("cat notes.txt")).stdout == b"one\n"
        for i in range(5):
            assert (await session.exec(f"echo {i}")).stdout == f"{i}\n".encode()
        # A command past its timeout is killed (the SDK sends KILL and
        # starts its next command on the same connection at once).
        with pytest.raises(ExecTimeoutError):
            await session.exec("sleep 30", timeout=1)
        assert (await session.exec("echo after")).stdout == b"after\n"

        inner = session._inner
        assert inner._sprite._control_mode_supported
        assert upgrades(daemon, name, "control") >= 1
        assert upgrades(daemon, name, "exec") == 0, "a command fell back to plain exec"

    run(with_session(daemon, body))


def test_files_read_and_written(daemon: Daemon) -> None:
    async def body(session: Any) -> None:
        data = bytes(range(256)) * 1024
        await session.write(Path("data/blob.bin"), io.BytesIO(data))
        got = await session.read(Path("data/blob.bin"))
        assert got.read() == data
        r = await session.exec("sha256sum data/blob.bin && wc -c < data/blob.bin")
        assert r.stdout.split()[-1] == str(len(data)).encode()
        await session.exec("printf 'from a command' > made.txt")
        assert (await session.read(Path("made.txt"))).read() == b"from a command"
        from agents.sandbox import WorkspaceReadNotFoundError

        with pytest.raises(WorkspaceReadNotFoundError):
            await session.read(Path("no-such-file"))

    run(with_session(daemon, body))


def test_workspace_persists_into_a_new_sprite(daemon: Daemon, tmp_path: Path) -> None:
    spec = LocalSnapshotSpec(base_path=tmp_path)

    async def main() -> None:
        client = sandbox(daemon)
        session = await client.create(
            options=SpritesSandboxClientOptions(idle_close_seconds=0), snapshot=spec
        )
        first = sprite_name(session)
        try:
            await session.start()
            await session.write(Path("src/app.py"), io.BytesIO(b"print('persisted')\n"))
            await session.exec("mkdir -p build && echo built > build/out.txt")
            # stop() persists the workspace: tar in the box, read through /fs.
            await session.stop()
            state = session.state
        finally:
            await client.delete(session)  # deletes the first sprite
        assert first not in [s["name"] for s in list_sprites(daemon)]

        # The recorded sprite is gone, so resume provisions a new one and
        # start() hydrates it from the snapshot (written through /fs, untarred
        # by a command).
        resumed = await client.resume(state)
        try:
            await resumed.start()
            assert (await resumed.exec("python3 src/app.py")).stdout == b"persisted\n"
            assert (await resumed.read(Path("build/out.txt"))).read() == b"built\n"
        finally:
            await client.delete(resumed)

    run(main())


def test_checkpoint_and_restore(daemon: Daemon) -> None:
    async def body(session: Any) -> None:
        checkpoints = SpritesCheckpoints(allow_restore=True)
        checkpoints.bind(session)
        await session.write(Path("state.txt"), io.BytesIO(b"before\n"))
        made = await checkpoints._create("before the risky change")
        match = re.search(r"id='([^']+)'", made)
        assert match, made
        checkpoint_id = match.group(1)
        assert checkpoint_id in await checkpoints._list()

        await session.write(Path("state.txt"), io.BytesIO(b"after\n"))
        await session.exec("rm -rf /workspace/other && touch /workspace/other")
        restored = await checkpoints._restore(checkpoint_id)
        assert restored == f"restored checkpoint {checkpoint_id!r}", restored

        # The box restarted on the restored disk; the session's pooled
        # control connection carries on and wakes it.
        assert (await session.read(Path("state.txt"))).read() == b"before\n"
        r = await session.exec("test -e /workspace/other")
        assert r.exit_code == 1

    run(with_session(daemon, body))


def list_sprites(daemon: Daemon) -> list[dict[str, Any]]:
    r = httpx.get(
        f"{daemon.url}/v1/sprites", headers={"Authorization": f"Bearer {daemon.token}"}
    )
    r.raise_for_status()
    return list(r.json().get("sprites", []))
