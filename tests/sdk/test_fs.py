"""The filesystem through sprites-py, unchanged: `sprite.filesystem()` and its
`SpritePath`s read, write, list, stat, make directories (the SDK writes and
deletes `dir/.keep`), rename, copy, chmod and delete, raise the SDK's own
exceptions, and a path with `..` (or a link out) stays in the box.

Listing a directory answers its children, and the SDK's `stat()` looks at
the first entry of a listing: on a directory it describes the first child
(see README), and `iterdir()` drops the entries' `isDir`. So directories
are checked with a shell in the box here, never with `is_dir()`."""

from __future__ import annotations

import os
from datetime import datetime

import pytest
from sprites import Sprite
from sprites.exceptions import (
    DirectoryNotEmptyError,
    FileNotFoundError_,
    FilesystemError,
    IsADirectoryError_,
    NotADirectoryError_,
)
from sprites.filesystem import SpriteFilesystem

from conftest import box_fixture

BOX = "sdk-fs"
box = box_fixture(BOX)


def sh(box: Sprite, script: str) -> str:
    return box.command("sh", "-c", script).output().decode()


@pytest.fixture
def fs(box: Sprite, request: pytest.FixtureRequest) -> SpriteFilesystem:
    """A fresh directory per test, as the working directory."""
    wd = f"/srv/{request.node.name}"
    sh(box, f"rm -rf {wd} && mkdir -p {wd}")
    return box.filesystem(wd)


def test_text_and_bytes_round_trip(box: Sprite, fs: SpriteFilesystem) -> None:
    (fs / "hello.txt").write_text("héllo, bothy\n")
    assert (fs / "hello.txt").read_text() == "héllo, bothy\n"
    assert sh(box, "cat /srv/test_text_and_bytes_round_trip/hello.txt") == "héllo, bothy\n"

    data = os.urandom(3 << 20) + b"\0\xff" * 1000
    (fs / "deep/er/blob.bin").write_bytes(data)
    assert (fs / "deep/er/blob.bin").read_bytes() == data
    st = (fs / "deep/er/blob.bin").stat()
    assert st.size == len(data) and not st.is_dir
    assert st.name == "blob.bin"
    assert st.mode == "0644"
    assert isinstance(st.mod_time, datetime) and st.mod_time.tzinfo is not None

    (fs / "secret").write_bytes(b"s", mode=0o600)
    assert (fs / "secret").stat().mode == "0600"
    # Overwriting replaces the content whole.
    (fs / "hello.txt").write_text("short")
    assert (fs / "hello.txt").read_text() == "short"


def test_stat_exists_and_is_file_on_files(fs: SpriteFilesystem) -> None:
    (fs / "f").write_text("x")
    assert (fs / "f").exists() and (fs / "f").is_file()
    assert not (fs / "missing").exists()
    assert not (fs / "missing").is_file()
    with pytest.raises(FileNotFoundError_):
        (fs / "missing").stat()
    (fs / "empty").touch()
    assert (fs / "empty").stat().size == 0


def test_mkdir_one_level_parents_and_exist_ok(box: Sprite, fs: SpriteFilesystem) -> None:
    wd = "/srv/test_mkdir_one_level_parents_and_exist_ok"
    # One level, without parents: the SDK writes `one/.keep` and deletes it.
    (fs / "one").mkdir()
    assert sh(box, f"stat -c %F:%U:%a {wd}/one && ls -A {wd}/one") == "directory:root:755\n"
    assert fs.cwd.listdir() == ["one"]
    # Two missing levels need parents.
    with pytest.raises(FileNotFoundError_):
        (fs / "a/b").mkdir()
    assert sh(box, f"test -e {wd}/a || echo none") == "none\n"
    (fs / "a/b/c").mkdir(parents=True)
    assert sh(box, f"cd {wd} && stat -c '%n %F %a' a a/b a/b/c") == (
        "a directory 755\na/b directory 755\na/b/c directory 755\n"
    )
    assert (fs / "a/b").listdir() == ["c"]
    assert list((fs / "a/b/c").iterdir()) == []
    # exist_ok: an empty directory, and one whose first entry is a directory.
    (fs / "a/b/c").mkdir(exist_ok=True)
    (fs / "a").mkdir(exist_ok=True)
    (fs / "one").mkdir(parents=True, exist_ok=True)
    # A file where a directory would go.
    (fs / "file").write_text("x")
    with pytest.raises(NotADirectoryError_):
        (fs / "file/sub").mkdir()


def test_iterdir_and_listdir(fs: SpriteFilesystem) -> None:
    for name in ["b.txt", "a.txt", "sub/inner.txt"]:
        (fs / name).write_text(name)
    assert fs.cwd.listdir() == ["a.txt", "b.txt", "sub"]
    paths = list(fs.cwd.iterdir())
    assert [p.name for p in paths] == ["a.txt", "b.txt", "sub"]
    assert paths[0].read_text() == "a.txt"
    assert (fs / "a.txt").is_file() and (fs / "sub/inner.txt").is_file()
    assert (fs / "sub").listdir() == ["inner.txt"]
    # Listing a file answers the file itself.
    assert (fs / "a.txt").listdir() == ["a.txt"]
    with pytest.raises(FileNotFoundError_):
        (fs / "nope").listdir()


def test_rename_copy_and_chmod(box: Sprite, fs: SpriteFilesystem) -> None:
    wd = "/srv/test_rename_copy_and_chmod"
    (fs / "old.txt").write_text("content")
    new = (fs / "old.txt").rename("new.txt")
    assert new.read_text() == "content"
    assert not (fs / "old.txt").exists()
    (fs / "new.txt").replace(fs / "newer.txt")
    assert (fs / "newer.txt").read_text() == "content"

    (fs / "tree/x/1.txt").write_text("one")
    (fs / "tree/2.txt").write_text("two")
    sh(box, f"ln -s 2.txt {wd}/tree/link")
    copied = (fs / "tree").copy_to(fs / "copy")
    assert copied.name == "copy"
    assert (fs / "copy/x/1.txt").read_text() == "one"
    assert (fs / "copy/2.txt").read_text() == "two"
    assert sh(box, f"readlink {wd}/copy/link") == "2.txt\n"
    (fs / "newer.txt").copy_to("single.txt")
    assert (fs / "single.txt").read_text() == "content"
    with pytest.raises(FilesystemError):
        (fs / "tree").copy_to(fs / "tree/x/inside")

    (fs / "single.txt").chmod(0o755)
    assert (fs / "single.txt").stat().mode == "0755"
    (fs / "tree").chmod(0o700, recursive=True)
    assert sh(box, f"cd {wd}/tree && stat -c '%n %a' . x x/1.txt 2.txt") == (
        ". 700\nx 700\nx/1.txt 700\n2.txt 700\n"
    )
    assert sh(box, f"stat -c %a {wd}/copy/2.txt") == "644\n"


def test_unlink_rmdir_and_rmtree(box: Sprite, fs: SpriteFilesystem) -> None:
    wd = "/srv/test_unlink_rmdir_and_rmtree"
    (fs / "f").write_text("x")
    (fs / "f").unlink()
    assert not (fs / "f").exists()
    with pytest.raises(FileNotFoundError_):
        (fs / "f").unlink()
    (fs / "f").unlink(missing_ok=True)

    (fs / "d/e/f.txt").write_text("x")
    with pytest.raises(DirectoryNotEmptyError):
        (fs / "d").rmdir()
    (fs / "d").rmtree()
    assert sh(box, f"test -e {wd}/d || echo gone") == "gone\n"
    (fs / "empty").mkdir()
    (fs / "empty").rmdir()
    assert fs.cwd.listdir() == []
    with pytest.raises(FileNotFoundError_):
        (fs / "d").rmtree()


def test_errors_are_the_sdks_exceptions(fs: SpriteFilesystem) -> None:
    with pytest.raises(FileNotFoundError_) as missing:
        (fs / "missing.txt").read_text()
    assert missing.value.path == "/srv/test_errors_are_the_sdks_exceptions/missing.txt"
    (fs / "dir/f").write_text("x")
    with pytest.raises(IsADirectoryError_):
        (fs / "dir").read_bytes()
    with pytest.raises(IsADirectoryError_):
        (fs / "dir").write_text("over a directory")
    with pytest.raises(NotADirectoryError_):
        (fs / "dir/f/below").read_bytes()
    # Every one of them is a FilesystemError.
    with pytest.raises(FilesystemError):
        (fs / "missing.txt").read_text()


def test_dot_dot_stays_in_the_box(box: Sprite, fs: SpriteFilesystem) -> None:
    # The SDK folds `..` into the path before sending it; what reaches the
    # server is resolved in the box either way, as are links out of it.
    up = "../" * 12
    assert (fs / f"{up}etc/hostname").read_text() == sh(box, "cat /etc/hostname")
    marker = f"bothy-sdk-fs-{os.getpid()}"
    (fs / f"{up}tmp/{marker}").write_text("in the box")
    assert sh(box, f"cat /tmp/{marker}") == "in the box"
    assert not os.path.exists(f"/tmp/{marker}")
    # A path that goes up and comes back down.
    (fs / "x/../y.txt").write_text("y")
    assert (fs / "y.txt").read_text() == "y"
    wd = "/srv/test_dot_dot_stays_in_the_box"
    sh(box, f"ln -s / {wd}/root && ln -s ../../../../etc {wd}/etc")
    assert (fs / "root/etc/hostname").read_text() == sh(box, "cat /etc/hostname")
    assert (fs / "etc/hostname").read_text() == sh(box, "cat /etc/hostname")
    (fs / f"root/tmp/{marker}-link").write_text("through a link")
    assert sh(box, f"cat /tmp/{marker}-link") == "through a link"
    assert not os.path.exists(f"/tmp/{marker}-link")
    root = box.filesystem("/")
    assert "etc" in root.root.listdir()
    assert (root / f"{up}srv/test_dot_dot_stays_in_the_box/y.txt").read_text() == "y"
