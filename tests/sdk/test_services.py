"""Services through sprites-py, unchanged: create with a log stream, list and
get with their state, the HTTP port has one owner, needs in order and no
cycle, stop and start, signal, restart after a crash and after a reboot of
the box, delete."""

from __future__ import annotations

import time

import pytest
from sprites import Sprite
from sprites.exceptions import APIError

from conftest import box_fixture, wait_for

BOX = "sdk-services"
box = box_fixture(BOX)


def state(box: Sprite, name: str) -> str:
    return box.get_service(name).state.status


def test_create_streams_the_start_and_the_output(box: Sprite) -> None:
    stream = box.create_service(
        "hello",
        "sh",
        args=["-c", "echo hello from $WHO in $(pwd); exec sleep 1000"],
        env={"WHO": "bothy"},
        dir="/tmp",
        duration=2,
    )
    events = list(stream)
    kinds = [e.type for e in events]
    assert kinds[0] == "started" and kinds[-1] == "complete", kinds
    out = "".join(e.data or "" for e in events if e.type == "stdout")
    assert "hello from bothy in /tmp" in out, events
    assert events[-1].log_files, "the end says where the log is"
    svc = box.get_service("hello")
    assert svc.cmd == "sh" and svc.env == {"WHO": "bothy"} and svc.dir == "/tmp"
    assert svc.state.status == "running" and svc.state.pid
    assert [s.name for s in box.list_services()] == ["hello"]
    log = box.command("cat", "/var/log/bothy/services/hello.log").output().decode()
    assert "hello from bothy in /tmp" in log


def test_one_owner_of_the_http_port_and_no_cycles(box: Sprite) -> None:
    box.create_service("web", "sleep", args=["1000"], http_port=8080)
    with pytest.raises(APIError) as taken:
        box.create_service("web2", "sleep", args=["1000"], http_port=8080)
    assert taken.value.status_code == 409
    with pytest.raises(APIError) as unknown:
        box.create_service("api", "sleep", args=["1000"], needs=["nope"])
    assert unknown.value.status_code == 400
    box.create_service("db", "sleep", args=["1000"])
    box.create_service("api", "sleep", args=["1000"], needs=["db"])
    with pytest.raises(APIError) as cycle:
        box.create_service("db", "sleep", args=["1000"], needs=["api"])
    assert cycle.value.status_code == 400 and "cycle" in (cycle.value.response or "")
    assert box.get_service("db").needs == []
    names = sorted(s.name for s in box.list_services())
    assert "web2" not in names and {"web", "db", "api"} <= set(names)


def test_stop_start_signal_and_delete(box: Sprite) -> None:
    box.create_service(
        "ticker",
        "sh",
        args=["-c", "trap 'echo got HUP' HUP; echo ready; while :; do sleep 0.1; done"],
    )

    def log() -> str:
        return (
            box.command("sh", "-c", "cat /var/log/bothy/services/ticker.log 2>/dev/null || true")
            .output()
            .decode()
        )

    # The signal goes once the trap is set, or it would end the shell.
    wait_for("ticker to set its trap", lambda: True if "ready" in log() else None)
    box.signal_service("ticker", "SIGHUP")
    wait_for("the HUP in the log", lambda: True if "got HUP" in log() else None)
    with pytest.raises(APIError) as bad:
        box.signal_service("ticker", "SIGNOPE")
    assert bad.value.status_code == 400
    events = [e.type for e in box.stop_service("ticker", timeout=5)]
    assert "stopping" in events and events[-1] == "complete", events
    assert state(box, "ticker") == "stopped"
    with pytest.raises(APIError) as not_running:
        box.signal_service("ticker", "SIGHUP")
    assert not_running.value.status_code == 409
    events = [e.type for e in box.start_service("ticker", duration=1)]
    assert events[0] == "started", events
    box.delete_service("ticker")
    with pytest.raises(APIError) as gone:
        box.get_service("ticker")
    assert gone.value.status_code == 404


def test_a_crashed_service_is_restarted_and_services_come_back_after_a_reboot(
    box: Sprite, client
) -> None:
    box.create_service("crashy", "sh", args=["-c", "sleep 0.3; exit 3"])
    wait_for(
        "a restart after the crash",
        lambda: True if box.get_service("crashy").state.restart_count >= 1 else None,
    )
    box.delete_service("crashy")
    before = box.get_service("web").state.started_at
    r = client._client.post(f"{client.base_url}/v1/sprites/{BOX}/restart", headers=client._headers())
    assert r.status_code < 300, r.text
    wait_for("web to run again after the reboot", lambda: True if state(box, "web") == "running" else None, timeout=60)
    # A new pid namespace may well hand out the same pid: the start time tells.
    assert box.get_service("web").state.started_at != before
