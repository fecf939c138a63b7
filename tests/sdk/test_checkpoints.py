"""Checkpoints through the unmodified sprites-py SDK: create, list, get, restore."""

from __future__ import annotations

from datetime import datetime

import pytest
from sprites import NotFoundError, Sprite

from conftest import box_fixture

BOX = "sdk-ckpt"


box = box_fixture(BOX)


def write(box: Sprite, text: str) -> None:
    box.command("sh", "-c", f"printf '%s\\n' '{text}' > /root/state && sync -f /").output()


def test_create_list_get_restore(box: Sprite) -> None:
    write(box, "before")

    messages = list(box.create_checkpoint("from the sdk"))
    assert messages, "the checkpoint stream has messages"
    assert not [m for m in messages if m.type == "error"], messages
    assert messages[-1].type == "complete", messages
    checkpoint_id = messages[-1].data
    assert checkpoint_id and checkpoint_id.startswith("v"), messages

    listed = box.list_checkpoints()
    assert checkpoint_id in [c.id for c in listed]

    got = box.get_checkpoint(checkpoint_id)
    assert got.id == checkpoint_id
    assert got.comment == "from the sdk"
    assert isinstance(got.create_time, datetime)
    assert got.create_time.tzinfo is not None, "create_time is parsed as an aware UTC time"

    write(box, "after")
    assert box.command("cat", "/root/state").output() == b"after\n"

    restored = list(box.restore_checkpoint(checkpoint_id))
    assert not [m for m in restored if m.type == "error"], restored
    assert restored[-1].type == "complete", restored
    kept = restored[-1].data
    assert kept and kept != checkpoint_id, restored

    assert box.command("cat", "/root/state").output() == b"before\n"

    # The automatic checkpoint that keeps "after" is hidden from the plain list
    # but can be fetched, and restoring it brings "after" back.
    assert kept not in [c.id for c in box.list_checkpoints()]
    assert box.get_checkpoint(kept).id == kept
    list(box.restore_checkpoint(kept))
    assert box.command("cat", "/root/state").output() == b"after\n"


def test_unknown_checkpoint_is_not_found(box: Sprite) -> None:
    with pytest.raises(NotFoundError):
        box.get_checkpoint("v999")


def test_comment_is_optional(box: Sprite) -> None:
    messages = list(box.create_checkpoint())
    assert messages[-1].type == "complete", messages
    got = box.get_checkpoint(messages[-1].data)
    assert not got.comment
