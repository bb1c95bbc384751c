"""Input blocks: a file or object cut into byte ranges at line boundaries, read straight from storage.

A data stage's driver only *plans* its input: :func:`plan_line_blocks` lists the files'
sizes (one metadata call each, nothing read) and cuts every uncompressed file into
``block_bytes`` ranges. Each task then reads its own block with :func:`read_block`,
from a local path or any URI ``shardtrain.shards.storage`` opens (ranged reads on an
object store), so the driver never holds the data.

A block owns the lines that *start* inside ``[start, stop)`` (Hadoop's rule): reading
begins at the first line start at or after ``start`` and runs past ``stop`` to the end
of the last line that starts before it. Every line therefore belongs to exactly one
block, whatever the block size, and concatenating the blocks of a file in order gives
the file back byte for byte. A compressed file (``.gz``, ``.bz2``) cannot be cut: it is
one block, decompressed as it is read.

Line numbers are not known at planning time (that would need a read); a block's lines
are counted by the task that reads it (:func:`count_lines`), and a stage that needs
global line numbers runs a first pass that returns each block's count, then gives each
block its first line number (:func:`first_lines`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from shardtrain.shards import storage

# 32 MiB: big enough that a task's fixed costs (start, one ranged GET) are amortised, small
# enough that a 2-core laptop and a 64-core node both get many blocks from a large file.
BLOCK_BYTES = 32 << 20
COMPRESSED = {".gz": "gzip", ".bz2": "bz2"}
_PROBE = 1 << 16  # bytes read at a time while looking for the end of a line


@dataclass(frozen=True)
class Block:
    """One byte range of one input file: ``[start, stop)`` of ``location`` (``stop=-1``: the whole file).

    ``index`` is the block's position among all planned blocks (the global input order),
    ``file_index`` the position of its file among the planned files, ``size`` the file's
    size in bytes, ``compression`` ``"gzip"``/``"bz2"`` for a whole compressed file.
    """

    location: str
    start: int
    stop: int
    index: int
    file_index: int
    size: int
    compression: str | None = None

    @property
    def name(self) -> str:
        """How messages name the block's file (redacted: never a credential)."""
        return storage.basename(self.location)


def compression_of(location: storage.Location) -> str | None:
    """``"gzip"`` or ``"bz2"`` from the name's suffix, else ``None``."""
    name = str(location).lower()
    return next((codec for suffix, codec in COMPRESSED.items() if name.endswith(suffix)), None)


def plan_line_blocks(locations: Iterable[storage.Location], block_bytes: int = BLOCK_BYTES) -> list[Block]:
    """Cut files into blocks of about ``block_bytes`` (compressed files whole), in file order.

    Only the files' sizes are read (one stat per file). A missing file is
    ``FileNotFoundError`` naming it (redacted); an empty file gives one empty block, so
    its existence still shows in the plan.
    """
    if block_bytes < 1:
        raise ValueError(f"block_bytes must be >= 1, got {block_bytes}")  # internal: callers validate config
    blocks: list[Block] = []
    for file_index, location in enumerate(locations):
        location = str(location)
        size = storage.file_size(location)
        if size is None:
            raise FileNotFoundError(f"{storage.redact(location)}: no such file")
        codec = compression_of(location)
        if codec is not None or size <= block_bytes:
            blocks.append(Block(location, 0, -1 if codec else size, len(blocks), file_index, size, codec))
            continue
        for start in range(0, size, block_bytes):
            blocks.append(Block(location, start, min(start + block_bytes, size), len(blocks), file_index, size))
    return blocks


def _line_start_at_or_after(reader, offset: int, size: int) -> int:
    """The first line start ``>= offset``: ``offset`` itself when a newline ends at ``offset - 1``."""
    if offset <= 0:
        return 0
    pos = offset - 1
    while pos < size:
        chunk = reader.read_at(min(_PROBE, size - pos), pos)
        hit = chunk.find(b"\n")
        if hit >= 0:
            return pos + hit + 1
        pos += len(chunk)
    return size


def read_block(block: Block) -> bytes:
    """The complete lines the block owns, as bytes (a compressed file: all of it, decompressed).

    The last line of a file keeps whatever ending it has (possibly none). Reads are
    ranged on an object store: the block itself plus at most a few 64 KiB probes to find
    its first and last line ends.
    """
    if block.stop == -1:
        # pyarrow's input streams decompress by the name's suffix (compression="detect").
        with storage.open_stream(block.location) as stream:
            return stream.read()
    if block.size == 0:
        return b""
    with storage.open_input(block.location) as reader:
        size = block.size
        begin = _line_start_at_or_after(reader, block.start, size)
        end = _line_start_at_or_after(reader, block.stop, size) if block.stop < size else size
        if end <= begin:
            return b""
        return reader.read_at(end - begin, begin)


def count_lines(data: bytes) -> int:
    """Lines in ``data``: its newlines, plus one for a last line without a newline."""
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


def first_lines(counts: Iterable[int], start: int = 1) -> list[int]:
    """Each block's first line number (1-based by default) from the blocks' line counts, in order."""
    out, line = [], start
    for count in counts:
        out.append(line)
        line += int(count)
    return out
