"""MCP through the official Python client (`mcp` on PyPI): `bothy mcp` over
stdio and the daemon's `/mcp` over streamable HTTP. Tools and their
annotations; create, exec, checkpoint, restore, fork, URL, services, files,
sleep and destroy; and a guardrailed token (cap, prefix, read-only) and
another organisation's box refused with the daemon's reason."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any, Awaitable, Callable, Optional, TypeVar

import httpx
import httpx2
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client

from conftest import Daemon, bothy_bin

T = TypeVar("T")

TOOLS = {
    "sprite_list", "sprite_create", "sprite_get", "sprite_destroy", "exec",
    "checkpoint_create", "checkpoint_list", "checkpoint_restore", "sprite_fork",
    "url_get", "url_set_auth", "services_list", "service_create", "service_start",
    "service_stop", "service_logs", "fs_read", "fs_write", "fs_list", "sprite_sleep",
}


def stdio(daemon: Daemon, token: str, fn: Callable[[ClientSession], Awaitable[T]]) -> T:
    """Runs `fn` in one MCP session with `bothy mcp` as a child process."""

    async def go() -> T:
        params = StdioServerParameters(
            command=str(bothy_bin()),
            args=["mcp"],
            env={"BOTHY_API_URL": daemon.url, "BOTHY_TOKEN": token, "PATH": os.environ["PATH"]},
        )
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                return await fn(session)

    return asyncio.run(go())


def http(daemon: Daemon, token: str, fn: Callable[[ClientSession], Awaitable[T]]) -> T:
    """Runs `fn` in one MCP session over the daemon's /mcp."""

    async def go() -> T:
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(300)) as hc:
            async with streamable_http_client(f"{daemon.url}/mcp", http_client=hc) as (read, write):
                async with ClientSession(read, write) as session:
                    await session.initialize()
                    return await fn(session)

    return asyncio.run(go())


async def call(s: ClientSession, tool: str, **args: Any) -> Any:
    """Calls a tool that must succeed; its result, parsed when it is JSON."""
    res = await s.call_tool(tool, args)
    text = "".join(getattr(c, "text", "") for c in res.content)
    assert not res.is_error, f"{tool} {args}: {text}"
    try:
        return json.loads(text)
    except ValueError:
        return text


async def refused(s: ClientSession, tool: str, **args: Any) -> str:
    """Calls a tool that must fail; the text of its error."""
    res = await s.call_tool(tool, args)
    text = "".join(getattr(c, "text", "") for c in res.content)
    assert res.is_error, f"{tool} {args} should have failed: {text}"
    return text


def mint(daemon: Daemon, org: str, mcp: Optional[dict[str, Any]] = None) -> str:
    """A token of `org` minted with the admin token, with MCP limits if given."""
    body: dict[str, Any] = {"description": "mcp test"}
    if mcp is not None:
        body["mcp"] = mcp
    r = httpx.post(
        f"{daemon.url}/v1/organizations/{org}/tokens",
        json=body,
        headers={"Authorization": f"Bearer {daemon.token}"},
        timeout=60,
    )
    assert r.status_code in (200, 201), r.text
    return r.json()["token"]


def api(daemon: Daemon, method: str, path: str, token: Optional[str] = None) -> httpx.Response:
    return httpx.request(
        method,
        f"{daemon.url}{path}",
        headers={"Authorization": f"Bearer {token or daemon.token}"},
        timeout=120,
    )


def test_tools_are_listed_with_annotations_over_both_transports(daemon: Daemon) -> None:
    async def tools(s: ClientSession) -> Any:
        return (await s.list_tools()).tools

    for transport in (stdio, http):
        listed = {t.name: t for t in transport(daemon, daemon.token, tools)}
        assert set(listed) == TOOLS, transport.__name__
        for t in listed.values():
            a = t.annotations
            assert a is not None and a.read_only_hint is not None, t.name
            assert t.description and len(t.description) > 40, t.name
        assert listed["sprite_list"].annotations.read_only_hint is True
        assert listed["sprite_destroy"].annotations.destructive_hint is True
        assert listed["checkpoint_restore"].annotations.destructive_hint is True
        assert listed["exec"].annotations.open_world_hint is True
        assert "checkpoint" in listed["checkpoint_create"].description.lower()
        assert listed["exec"].input_schema["required"] == ["sprite", "cmd"]


def test_http_without_a_valid_token_is_refused_before_mcp(daemon: Daemon) -> None:
    init = {
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "t", "version": "1"}},
    }
    accept = {"Accept": "application/json, text/event-stream"}
    r = httpx.post(f"{daemon.url}/mcp", json=init, headers=accept, timeout=30)
    assert r.status_code == 401, r.text
    assert "token" in r.json()["message"]
    r = httpx.post(f"{daemon.url}/mcp", json=init, timeout=30,
                   headers={**accept, "Authorization": "Bearer not-a-token"})
    assert r.status_code == 401, r.text


def test_a_whole_workflow_over_stdio(daemon: Daemon) -> None:
    async def flow(s: ClientSession) -> None:
        made = await call(s, "sprite_create", name="mcp-flow")
        assert made["name"] == "mcp-flow"
        try:
            listed = await call(s, "sprite_list", prefix="mcp-")
            assert "mcp-flow" in [b["name"] for b in listed["sprites"]]

            out = await call(s, "exec", sprite="mcp-flow",
                             cmd=["sh", "-c", "cat; echo err >&2; echo $GREETING; pwd; exit 3"],
                             stdin="from stdin\n", env={"GREETING": "hi"}, dir="/tmp")
            assert out["exit_code"] == 3, out
            assert out["stdout"] == "from stdin\nhi\n/tmp\n", out
            assert out["stderr"] == "err\n", out

            big = await call(s, "exec", sprite="mcp-flow",
                             cmd=["sh", "-c", "head -c 300000 /dev/zero | tr '\\0' a; echo END"])
            assert big["exit_code"] == 0
            assert big["stdout"].endswith("aEND\n"), big["stdout"][-50:]
            assert len(big["stdout"]) < 40_000
            assert "omitted" in big["stdout"] and big["notes"], big.get("notes")

            slow = await call(s, "exec", sprite="mcp-flow", cmd=["sleep", "30"], timeout_secs=1)
            assert slow["exit_code"] is None and "did not finish" in " ".join(slow["notes"])

            text = await refused(s, "exec", sprite="mcp-flow", cmd=[])
            assert "cmd is empty" in text

            await call(s, "exec", sprite="mcp-flow", cmd=["sh", "-c", "echo one > /root/state"])
            cp = await call(s, "checkpoint_create", sprite="mcp-flow", comment="before two")
            assert cp["id"].startswith("v") and cp["comment"] == "before two"
            await call(s, "exec", sprite="mcp-flow", cmd=["sh", "-c", "echo two > /root/state"])
            cps = await call(s, "checkpoint_list", sprite="mcp-flow")
            assert cp["id"] in [c["id"] for c in cps["checkpoints"]]
            back = await call(s, "checkpoint_restore", sprite="mcp-flow", checkpoint=cp["id"])
            assert back["previous_state_checkpoint"]
            after = await call(s, "exec", sprite="mcp-flow", cmd=["cat", "/root/state"])
            assert after["stdout"] == "one\n"

            fork = await call(s, "sprite_fork", name="mcp-fork", from_sprite="mcp-flow",
                              checkpoint=cp["id"])
            assert fork["name"] == "mcp-fork"
            forked = await call(s, "exec", sprite="mcp-fork", cmd=["cat", "/root/state"])
            assert forked["stdout"] == "one\n"
            await call(s, "sprite_destroy", sprite="mcp-fork")
            missing = await refused(s, "sprite_get", sprite="mcp-fork")
            assert "404" in missing

            url = await call(s, "url_get", sprite="mcp-flow")
            assert "mcp-flow" in url["url"] and url["auth"] == "sprite"
            url = await call(s, "url_set_auth", sprite="mcp-flow", auth="public")
            assert url["auth"] == "public"
            assert (await call(s, "sprite_get", sprite="mcp-flow"))["url_settings"]["auth"] == "public"

            created = await call(s, "service_create", sprite="mcp-flow", name="hello", cmd="sh",
                                 args=["-c", "echo hello from the service; exec sleep 1000"])
            assert created["service"] == "hello"
            services = await call(s, "services_list", sprite="mcp-flow")
            assert "hello" in json.dumps(services)
            for _ in range(50):
                logs = await call(s, "service_logs", sprite="mcp-flow", name="hello")
                if "hello from the service" in str(logs):
                    break
                await asyncio.sleep(0.2)
            assert "hello from the service" in str(logs)
            await call(s, "service_stop", sprite="mcp-flow", name="hello", timeout_secs=2)
            await call(s, "service_start", sprite="mcp-flow", name="hello")

            slept = await call(s, "sprite_sleep", sprite="mcp-flow")
            assert "warm" in json.dumps(slept), slept
            woke = await call(s, "exec", sprite="mcp-flow", cmd=["true"])
            assert woke["exit_code"] == 0
        finally:
            await s.call_tool("sprite_destroy", {"sprite": "mcp-fork"})
            await call(s, "sprite_destroy", sprite="mcp-flow")
        gone = await call(s, "sprite_list", prefix="mcp-flow")
        assert gone["sprites"] == []

    stdio(daemon, daemon.token, flow)


def test_files_over_http(daemon: Daemon) -> None:
    async def flow(s: ClientSession) -> None:
        await call(s, "sprite_create", name="mcp-files")
        try:
            wrote = await call(s, "fs_write", sprite="mcp-files", path="/root/dir/run.sh",
                               content="#!/bin/sh\necho ran\n", mode="0755")
            assert "wrote" in wrote
            assert await call(s, "fs_read", sprite="mcp-files", path="/root/dir/run.sh") == \
                "#!/bin/sh\necho ran\n"
            listing = await call(s, "fs_list", sprite="mcp-files", path="/root/dir")
            names = [e["name"] for e in listing["entries"]]
            assert "run.sh" in names, listing
            ran = await call(s, "exec", sprite="mcp-files", cmd=["/root/dir/run.sh"])
            assert ran["stdout"] == "ran\n"
            text = await refused(s, "fs_read", sprite="mcp-files", path="/root/nope")
            assert "404" in text or "no such" in text.lower(), text
            text = await refused(s, "fs_write", sprite="mcp-files", path="/root/x", content="",
                                 mode="rwx")
            assert "octal" in text
        finally:
            await call(s, "sprite_destroy", sprite="mcp-files")

    http(daemon, daemon.token, flow)


def test_a_guardrailed_token_is_held_to_its_limits(daemon: Daemon) -> None:
    limited = mint(daemon, "mcporg", {"max_sprites": 1, "prefix": "agent-", "read_only": False})
    other_org = mint(daemon, "mcpother")
    made = httpx.post(f"{daemon.url}/v1/sprites", json={"name": "theirs"},
                      headers={"Authorization": f"Bearer {other_org}"}, timeout=120)
    assert made.status_code in (200, 201), made.text
    same_org_token = mint(daemon, "mcporg")
    same_org = httpx.post(f"{daemon.url}/v1/sprites", json={"name": "unprefixed"},
                          headers={"Authorization": f"Bearer {same_org_token}"},
                          timeout=120)
    assert same_org.status_code in (200, 201), same_org.text

    async def flow(s: ClientSession) -> None:
        await call(s, "sprite_create", name="agent-one")
        try:
            text = await refused(s, "sprite_create", name="agent-two")
            assert "quota_exceeded" in text and "403" in text, text
            text = await refused(s, "sprite_create", name="rogue")
            assert "403" in text and "agent-" in text, text
            names = [b["name"] for b in (await call(s, "sprite_list"))["sprites"]]
            assert names == ["agent-one"], names
            for name in ("theirs", "unprefixed"):
                text = await refused(s, "exec", sprite=name, cmd=["true"])
                assert "404" in text, text
                text = await refused(s, "sprite_destroy", sprite=name)
                assert "404" in text, text
            out = await call(s, "exec", sprite="agent-one", cmd=["echo", "mine"])
            assert out["stdout"] == "mine\n"
        finally:
            await call(s, "sprite_destroy", sprite="agent-one")

    for transport in (http, stdio):
        transport(daemon, limited, flow)
    # Refused, not merely missed: the other organisation's box is still there.
    assert api(daemon, "GET", "/v1/sprites/theirs", other_org).status_code == 200
    assert api(daemon, "DELETE", "/v1/sprites/theirs", other_org).status_code in (200, 204)
    assert api(daemon, "DELETE", "/v1/sprites/unprefixed", same_org_token).status_code in (200, 204)


def test_a_read_only_token_only_reads(daemon: Daemon) -> None:
    writer = mint(daemon, "mcpro", {"max_sprites": 2, "prefix": "ro-", "read_only": False})
    made = httpx.post(f"{daemon.url}/v1/sprites", json={"name": "ro-box"},
                      headers={"Authorization": f"Bearer {writer}"}, timeout=120)
    assert made.status_code in (200, 201), made.text
    reader = mint(daemon, "mcpro", {"max_sprites": 2, "prefix": "ro-", "read_only": True})

    async def flow(s: ClientSession) -> None:
        listed = await call(s, "sprite_list")
        assert [b["name"] for b in listed["sprites"]] == ["ro-box"]
        assert (await call(s, "sprite_get", sprite="ro-box"))["name"] == "ro-box"
        await call(s, "checkpoint_list", sprite="ro-box")
        for tool, args in [
            ("sprite_create", {"name": "ro-new"}),
            ("exec", {"sprite": "ro-box", "cmd": ["true"]}),
            ("checkpoint_create", {"sprite": "ro-box"}),
            ("sprite_destroy", {"sprite": "ro-box"}),
        ]:
            text = await refused(s, tool, **args)
            assert "403" in text and "read-only" in text, (tool, text)

    for transport in (http, stdio):
        transport(daemon, reader, flow)
    assert api(daemon, "DELETE", "/v1/sprites/ro-box", writer).status_code in (200, 204)
