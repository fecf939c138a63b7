"""Sprite management through the unmodified sprites-py SDK."""

from __future__ import annotations

import httpx
import pytest
from sprites import (
    AuthenticationError,
    ListOptions,
    NotFoundError,
    SpriteError,
    SpritesClient,
)
from sprites.types import SpriteConfig, URLSettings


def test_create_get_destroy(client: SpritesClient) -> None:
    sprite = client.create_sprite("sdk-life", labels=["team-a"])
    assert sprite.name == "sdk-life"
    assert sprite.status == "running"
    assert sprite.id and sprite.id.startswith("b")
    assert sprite.labels == ["team-a"]
    assert sprite.created_at is not None

    got = client.get_sprite("sdk-life")
    assert got.id == sprite.id
    assert got.organization_name == "default"

    client.destroy_sprite("sdk-life")
    with pytest.raises(NotFoundError):
        client.get_sprite("sdk-life")


def test_create_with_config_is_reported_back(client: SpritesClient) -> None:
    sprite = client.create_sprite(
        "sdk-config",
        config=SpriteConfig(ram_mb=512, cpus=1, storage_gb=10),
        url_settings=URLSettings(auth="public"),
    )
    try:
        got = client.get_sprite("sdk-config")
        assert got.url_settings is not None and got.url_settings.auth == "public"
        info = client._client.get(
            f"{client.base_url}/v1/sprites/sdk-config", headers=client._headers()
        ).json()
        assert info["config"]["ram_mb"] == 512
        assert info["config"]["cpus"] == 1
        assert info["config"]["storage_gb"] == 10
        out = sprite.command("df", "-BG", "--output=size", "/").output()
        size_gb = int(out.split()[-1].rstrip(b"G"))
        assert 9 <= size_gb <= 10, f"the disk is the requested size: {out!r}"
    finally:
        client.destroy_sprite("sdk-config")


def test_list_prefix_and_pagination(client: SpritesClient) -> None:
    names = ["pg-a", "pg-b", "pg-c"]
    for n in names:
        client.create_sprite(n)
    client.create_sprite("other-x")
    try:
        everything = client.list_sprites()
        assert {"pg-a", "pg-b", "pg-c", "other-x"} <= {s.name for s in everything.sprites}
        assert everything.running >= 4

        filtered = client.list_sprites(ListOptions(prefix="pg-"))
        assert [s.name for s in filtered.sprites] == names
        assert filtered.has_more is False

        first = client.list_sprites(ListOptions(prefix="pg-", max_results=2))
        assert [s.name for s in first.sprites] == ["pg-a", "pg-b"]
        assert first.has_more is True
        assert first.next_continuation_token

        second = client.list_sprites(
            ListOptions(
                prefix="pg-",
                max_results=2,
                continuation_token=first.next_continuation_token,
            )
        )
        assert [s.name for s in second.sprites] == ["pg-c"]
        assert second.has_more is False

        assert [s.name for s in client.list_all_sprites(prefix="pg-")] == names
    finally:
        for n in names + ["other-x"]:
            client.destroy_sprite(n)
    assert client.list_all_sprites(prefix="pg-") == []


def test_update_labels_and_url_settings(client: SpritesClient) -> None:
    client.create_sprite("sdk-upd", labels=["one"])
    try:
        updated = client.update_sprite("sdk-upd", labels=["two", "three"])
        assert updated.labels == ["two", "three"]
        assert client.get_sprite("sdk-upd").labels == ["two", "three"]

        # A partial update leaves the labels alone.
        client.update_url_settings("sdk-upd", URLSettings(auth="public"))
        got = client.get_sprite("sdk-upd")
        assert got.labels == ["two", "three"]
        assert got.url_settings is not None and got.url_settings.auth == "public"
    finally:
        client.destroy_sprite("sdk-upd")


def test_unknown_sprite_is_not_found(client: SpritesClient) -> None:
    with pytest.raises(NotFoundError):
        client.get_sprite("does-not-exist")
    with pytest.raises(NotFoundError):
        client.destroy_sprite("does-not-exist")


def test_bad_token_is_authentication_error(daemon) -> None:  # type: ignore[no-untyped-def]
    with SpritesClient("bothy_wrong", base_url=daemon.url) as bad:
        with pytest.raises(AuthenticationError):
            bad.list_sprites()
        with pytest.raises(AuthenticationError):
            bad.create_sprite("never")


def test_duplicate_is_409_and_bad_name_is_400(client: SpritesClient) -> None:
    client.create_sprite("sdk-dup")
    try:
        with pytest.raises(SpriteError) as dup:
            client.create_sprite("sdk-dup")
        assert "status 409" in str(dup.value)
        assert "already_exists" in str(dup.value)

        for bad_name in ["Bad_Name", "x" * 41, "../etc"]:
            with pytest.raises(SpriteError) as bad:
                client.create_sprite(bad_name)
            assert "status 400" in str(bad.value), bad_name
            assert "invalid_name" in str(bad.value), bad_name
        assert {s.name for s in client.list_all_sprites()} >= {"sdk-dup"}
        assert "Bad_Name" not in {s.name for s in client.list_all_sprites()}
    finally:
        client.destroy_sprite("sdk-dup")


def test_error_bodies_are_json_with_error_and_message(daemon) -> None:  # type: ignore[no-untyped-def]
    r = httpx.get(f"{daemon.url}/v1/sprites/nope", headers={"Authorization": f"Bearer {daemon.token}"})
    assert r.status_code == 404
    body = r.json()
    assert isinstance(body["error"], str) and body["error"]
    assert isinstance(body["message"], str) and body["message"]
