"""Command execution and sessions through the unmodified sprites-py SDK."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
from urllib.parse import urlencode

import pytest
from sprites import ExecError, Sprite, SpritesClient
from sprites.exceptions import APIError
from websockets.asyncio.client import connect

from conftest import Daemon, box_fixture, wait_for

BOX = "sdk-exec"


box = box_fixture(BOX)


def test_output_returns_stdout(box: Sprite) -> None:
    assert box.command("echo", "hello").output() == b"hello\n"


def test_nonzero_exit_raises_with_separate_streams(box: Sprite) -> None:
    cmd = box.command("sh", "-c", "echo out; echo err >&2; exit 3")
    with pytest.raises(ExecError) as e:
        cmd.output()
    assert e.value.exit_code() == 3
    assert e.value.stdout == b"out\n"
    assert e.value.stderr == b"err\n"


def test_run_capture_output(box: Sprite) -> None:
    done = box.run("sh", "-c", "printf 'a\\000b'; printf 'E' >&2; exit 7", capture_output=True)
    assert done.returncode == 7
    assert done.stdout == b"a\x00b"
    assert done.stderr == b"E"
    ok = box.run("true", capture_output=True, check=True)
    assert ok.returncode == 0


def test_env_and_cwd(box: Sprite) -> None:
    out = box.command("sh", "-c", "echo $PWD:$GREETING", env={"GREETING": "hi there"}, cwd="/tmp").output()
    assert out == b"/tmp:hi there\n"


def test_stdin_from_file_object(box: Sprite) -> None:
    data = bytes(range(256)) * 4096 + b"tail"
    out = box.command("sha256sum", stdin=io.BytesIO(data)).output()
    assert out.split()[0].decode() == hashlib.sha256(data).hexdigest()


def test_stdout_sink(box: Sprite) -> None:
    sink = io.BytesIO()
    box.command("sh", "-c", "seq 1 1000", stdout=sink).run()
    assert sink.getvalue() == b"".join(f"{i}\n".encode() for i in range(1, 1001))


def test_tty_mode(box: Sprite) -> None:
    done = box.run("tty", tty=True, capture_output=True)
    assert done.returncode == 0
    assert done.stdout.strip().startswith(b"/dev/pts/"), done.stdout
    size = box.run("stty", "size", tty=True, tty_rows=33, tty_cols=101, capture_output=True)
    assert size.stdout.strip() == b"33 101"
    code = box.run("sh", "-c", "exit 4", tty=True)
    assert code.returncode == 4


def test_exec_on_unknown_sprite_is_404(client: SpritesClient) -> None:
    with pytest.raises(APIError) as e:
        client.sprite("no-such-sprite").run("true")
    assert e.value.status_code == 404


async def _start_and_disconnect(daemon: Daemon, name: str, argv: list[str]) -> str:
    """Starts a session over the raw exec WebSocket, reads its session_info, then
    drops the connection, the way a client that goes away does."""
    query = urlencode([("cmd", a) for a in argv] + [("path", argv[0]), ("stdin", "true")])
    url = f"ws://127.0.0.1:{daemon.port}/v1/sprites/{name}/exec?{query}"
    async with connect(url, additional_headers={"Authorization": f"Bearer {daemon.token}"}) as ws:
        first = await asyncio.wait_for(ws.recv(), timeout=30)
        info = json.loads(first)
        assert info["type"] == "session_info"
        assert info["tty"] is False
        return str(info["session_id"])


def test_list_sessions_and_attach_after_disconnect(daemon: Daemon, box: Sprite) -> None:
    marker = "sdk-attach-31337"
    session_id = asyncio.run(
        _start_and_disconnect(daemon, BOX, ["sh", "-c", f"sleep 2; echo {marker}"])
    )

    listed = wait_for(
        "the detached session in list_sessions",
        lambda: next((s for s in box.list_sessions() if s.id == session_id), None),
    )
    assert marker in listed.command
    assert listed.tty is False

    attached = box.attach_session(session_id, timeout=60)
    assert attached.output() == f"{marker}\n".encode()


def test_kill_session(daemon: Daemon, box: Sprite) -> None:
    from sprites.session import kill_session

    session_id = asyncio.run(
        _start_and_disconnect(daemon, BOX, ["sh", "-c", "sleep 600 # kill-me"])
    )
    messages = list(kill_session(box, session_id, signal="SIGTERM", timeout=5))
    assert messages, "kill answers with an NDJSON progress stream"
    assert messages[-1].type == "complete", messages

    def gone_or_exited():  # type: ignore[no-untyped-def]
        s = next((s for s in box.list_sessions() if s.id == session_id), None)
        if s is None:
            return True
        raw = box.client._client.get(
            f"{daemon.url}/v1/sprites/{BOX}/exec", headers=box._headers()
        ).json()
        for item in raw["sessions"]:
            if item["id"] == session_id and item.get("exit_code") is not None:
                return True
        return None

    wait_for("the killed session to end", gone_or_exited)


def test_exit_arrives_while_the_client_still_sends_stdin(box: Sprite) -> None:
    # `head -c 1` exits after one byte while the SDK is still sending the rest:
    # the exit status must reach it every time, however the connection ends.
    for _ in range(10):
        out = box.command("head", "-c", "1", stdin=io.BytesIO(b"x" * (1 << 20))).output()
        assert out == b"x"


async def _start_detached_tty(daemon: Daemon, name: str, argv: list[str]) -> str:
    query = urlencode([("cmd", a) for a in argv] + [("path", argv[0]), ("tty", "true")])
    url = f"ws://127.0.0.1:{daemon.port}/v1/sprites/{name}/exec?{query}"
    async with connect(url, additional_headers={"Authorization": f"Bearer {daemon.token}"}) as ws:
        info = json.loads(await asyncio.wait_for(ws.recv(), timeout=30))
        assert info["type"] == "session_info" and info["tty"] is True
        seen = b""
        while b"ready" not in seen:
            seen += await asyncio.wait_for(ws.recv(), timeout=30)
        return str(info["session_id"])


async def _attach_sending_eof_first(daemon: Daemon, name: str, session_id: str) -> str:
    """Re-attaches the way sprites-py does without stdin: the non-TTY end-of-stdin
    byte goes out before session_info has been read. Then types a line and
    returns the terminal output up to the script's answer."""
    url = f"ws://127.0.0.1:{daemon.port}/v1/sprites/{name}/exec/{session_id}?stdin=true"
    async with connect(url, additional_headers={"Authorization": f"Bearer {daemon.token}"}) as ws:
        await ws.send(b"\x04")
        info = json.loads(await asyncio.wait_for(ws.recv(), timeout=30))
        assert info["type"] == "session_info" and info["tty"] is True
        await ws.send(b"typed\r")
        seen = b""
        while b"line:" not in seen and b"eof" not in seen:
            msg = await asyncio.wait_for(ws.recv(), timeout=30)
            if isinstance(msg, bytes):
                seen += msg
        return seen.decode(errors="replace")


def test_reattaching_to_a_terminal_does_not_type_ctrl_d(daemon: Daemon, box: Sprite) -> None:
    script = "echo ready; if read x; then echo line:$x; else echo eof; fi; sleep 600"
    session_id = asyncio.run(_start_detached_tty(daemon, BOX, ["sh", "-c", script]))
    seen = asyncio.run(_attach_sending_eof_first(daemon, BOX, session_id))
    assert "line:typed" in seen and "eof" not in seen, seen
    from sprites.session import kill_session

    list(kill_session(box, session_id, signal="SIGKILL", timeout=1))
