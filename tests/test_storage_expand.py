"""``storage.expand``: a file, a directory or a glob, the same on a local path and on s3://."""

from __future__ import annotations

from pathlib import Path

from shardtrain.shards import storage
from tests.s3server import moto_endpoint, s3  # noqa: F401  (pytest fixtures)

NAMES = ["a.log", "b.log", ".hidden.log", "sub/c.log", "x.txt"]


def _check(base: str) -> None:
    j = lambda *p: str(storage.join(base, *p))  # noqa: E731
    assert storage.expand(storage.join(base, "*.log")) == [j(n) for n in ("a.log", "b.log")]
    assert storage.expand(base) == [j(n) for n in ("a.log", "b.log", "x.txt")]
    assert storage.expand(storage.join(base, "a.log")) == [j("a.log")]
    assert storage.expand(storage.join(base, "*", "*.log")) == [j("sub", "c.log")]
    assert storage.expand(storage.join(base, "nothing*")) == []
    assert storage.expand(storage.join(base, "nothing")) == []


def test_expand_local(tmp_path: Path) -> None:
    for name in NAMES:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("1")
    _check(str(tmp_path))


def test_expand_s3(s3) -> None:  # noqa: F811
    for name in NAMES:
        storage.write_bytes(s3.uri(f"data/{name}"), b"1")
    _check(s3.uri("data"))
