"""A pool-backed create through the unmodified sprites-py SDK: the daemon keeps a
booted box ready (`--warm-pool 1`); `create_sprite` takes it, and the sprite is
the caller's under its own name and labels, with nothing of the pool in sight."""

from __future__ import annotations

from typing import Iterator, Optional

import httpx
import pytest
from sprites import SpritesClient

from conftest import Daemon, running_daemon, wait_for


@pytest.fixture(scope="module")
def pooled() -> Iterator[Daemon]:
    yield from running_daemon(["--warm-pool", "1", "--idle-timeout", "never"])


def pool_ready(d: Daemon) -> int:
    text = httpx.get(
        f"{d.url}/metrics", headers={"Authorization": f"Bearer {d.token}"}, timeout=30
    ).text
    for line in text.splitlines():
        if line.startswith("bothy_warm_pool_ready "):
            return int(float(line.split()[1]))
    pytest.fail(f"no bothy_warm_pool_ready in the metrics:\n{text}")


def test_create_takes_a_pooled_box(pooled: Daemon) -> None:
    def ready() -> Optional[bool]:
        return True if pool_ready(pooled) == 1 else None

    wait_for("a ready box in the warm pool", ready, 120)
    client = SpritesClient(pooled.token, base_url=pooled.url, timeout=120)
    try:
        assert client.list_sprites().sprites == [], "pooled boxes are nobody's"
        sprite = client.create_sprite("sdk-pooled", labels=["quick"])
        assert sprite.name == "sdk-pooled"
        assert sprite.status == "running"
        assert sprite.labels == ["quick"]
        assert "sprite created from the warm pool" in pooled.log()
        assert client.sprite("sdk-pooled").command("hostname").output() == b"sdk-pooled\n"
        assert [s.name for s in client.list_sprites().sprites] == ["sdk-pooled"]
        wait_for("the pool to refill", ready, 120)
        client.destroy_sprite("sdk-pooled")
    finally:
        client.close()
