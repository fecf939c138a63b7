"""Fixtures for the sprites-py compatibility suite: a real `bothy daemon` on a free
loopback port with a throwaway data dir, and an unmodified `SpritesClient` pointed
at it.

The binary is $BOTHY_BIN, else target/release/bothy, else target/debug/bothy.
The base image comes from $BOTHY_IMAGE_DIR (default /var/lib/bothy-images).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator, Optional, TypeVar

import pytest
from sprites import Sprite, SpritesClient

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 60
STOP_TIMEOUT_S = 90

T = TypeVar("T")


def wait_for(what: str, check: Callable[[], Optional[T]], timeout: float = 30) -> T:
    """Polls `check` until it returns something other than None, or fails the
    test after `timeout` seconds naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def bothy_bin() -> Path:
    if os.environ.get("BOTHY_BIN"):
        return Path(os.environ["BOTHY_BIN"])
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    for profile in ("release", "debug"):
        candidate = target / profile / "bothy"
        if candidate.exists():
            return candidate
    pytest.fail("no bothy binary: run `cargo build` or set BOTHY_BIN")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    """One `bothy daemon` process and its data dir."""

    def __init__(self, extra_args: Optional[list[str]] = None) -> None:
        self.extra_args = extra_args or []
        self.work = Path(tempfile.mkdtemp(prefix="bothy-sdk-")).resolve()
        self.data_dir = self.work / "data"
        self.log_path = self.work / "daemon.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.token = ""

    def start(self) -> None:
        cmd = [
            str(bothy_bin()),
            "daemon",
            "--stop-boxes",
            "--data-dir",
            str(self.data_dir),
            "--listen",
            f"127.0.0.1:{self.port}",
        ]
        if os.environ.get("BOTHY_IMAGE_DIR"):
            cmd += ["--image-dir", os.environ["BOTHY_IMAGE_DIR"]]
        cmd += self.extra_args
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()

        def accepting() -> Optional[bool]:
            assert self.proc is not None
            if self.proc.poll() is not None:
                pytest.fail(f"daemon exited during start-up:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return True
            except OSError:
                return None

        wait_for("the daemon to accept connections", accepting, READY_TIMEOUT_S)
        token_file = self.data_dir / "admin-token"
        self.token = wait_for(
            "the admin token",
            lambda: (token_file.read_text().strip() or None) if token_file.exists() else None,
            READY_TIMEOUT_S,
        )

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def leftover_mounts(self) -> list[str]:
        prefix = str(self.data_dir)
        with open("/proc/self/mountinfo") as f:
            points = [line.split(" ")[4] for line in f]
        return sorted(
            (p for p in points if p == prefix or p.startswith(prefix + "/")),
            key=lambda p: -p.count("/"),
        )

    def cleanup(self) -> None:
        """Removes what a failed run may leave: processes naming the data dir,
        mounts and loop devices under it, then the directory itself."""
        prefix = str(self.data_dir)
        for pid_dir in Path("/proc").iterdir():
            if not pid_dir.name.isdigit() or int(pid_dir.name) == os.getpid():
                continue
            try:
                cmdline = (pid_dir / "cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if prefix.encode() in cmdline:
                try:
                    os.kill(int(pid_dir.name), signal.SIGKILL)
                except OSError:
                    pass
        for point in self.leftover_mounts():
            subprocess.run(["umount", "-l", point], capture_output=True)
        for dev in Path("/sys/block").glob("loop*"):
            try:
                backing = (dev / "loop" / "backing_file").read_text().strip()
            except OSError:
                continue
            if backing.startswith(prefix + "/"):
                subprocess.run(["losetup", "-d", f"/dev/{dev.name}"], capture_output=True)
        if not self.leftover_mounts():
            shutil.rmtree(self.work, ignore_errors=True)


def running_daemon(extra_args: Optional[list[str]] = None) -> Iterator[Daemon]:
    """A started daemon for a fixture to yield; stopped and cleaned up after."""
    d = Daemon(extra_args)
    try:
        d.start()
        yield d
    finally:
        d.stop()
        d.cleanup()


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    yield from running_daemon()


@pytest.fixture(scope="module")
def client(daemon: Daemon) -> Iterator[SpritesClient]:
    c = SpritesClient(daemon.token, base_url=daemon.url, timeout=120)
    try:
        yield c
    finally:
        c.close()


def pytest_runtest_makereport(item, call):  # type: ignore[no-untyped-def]
    """Attach the daemon's log to failures: the SDK's messages rarely say why."""
    if call.when == "call" and call.excinfo is not None:
        d = item.funcargs.get("daemon") if hasattr(item, "funcargs") else None
        if isinstance(d, Daemon):
            tail = "\n".join(d.log().splitlines()[-40:])
            item.add_report_section("call", "daemon log (tail)", tail)


def box_fixture(name: str):  # type: ignore[no-untyped-def]
    """A module-scoped fixture: a sprite named `name`, destroyed afterwards."""

    @pytest.fixture(scope="module")
    def box(client: SpritesClient) -> Iterator[Sprite]:
        sprite = client.create_sprite(name)
        try:
            yield sprite
        finally:
            client.destroy_sprite(name)

    return box
