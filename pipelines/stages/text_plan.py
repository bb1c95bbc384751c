"""The ``text`` kind's prepare plan: the driver plans blocks and merges small summaries, tasks read the data.

The files of a ``text`` dataset (``path``, ``val_path``, ``test_path``: local paths or
URIs) are cut into line blocks (``shardtrain.shards.blocks``, ``cfg.prepare.block_bytes``;
a header line belongs to the first block of its file). A delimited record never spans
lines, quoting or not (a quoted newline is a reject, see ``shardtrain.readers.text``), so
any block boundary is a record boundary and no file has to be one block. Then:

1. **scan** (one task per block, :func:`scan_block`): the block's data rows, its reader
   rejects and the counts of its kept label cells. The driver gives every block its first
   row number (row numbers are the sample ids, 0-based per file, as before) and every
   label cell of the labelled file its stratum (sorted cells; rejected or unlabelled rows
   are one more stratum), so it knows how many rows of each stratum each block holds.
2. **split** (a shuffle, ``map_reduce``): the split rule is unchanged, an exact per-class
   count: stratum ``k``'s rows, in sample order, are permuted by ``default_rng([seed, k])``
   and cut at the cumulative fractions. Map task ``k`` (:func:`assign_stratum`) draws that
   permutation (O(rows of the class) in that task, never in the driver) and sends each
   block the splits of its rows of stratum ``k``; the driver fits the label vocabulary on
   the per-stratum train counts (``between``); reduce task ``j`` (:func:`settle_block`)
   re-parses block ``j``, encodes its labels (vocabulary rejects), counts its rows per
   split and, with ``prepare.text.idf``, the document frequencies of its training texts.
   Its data, one int8 split code per row, stays with the executor (Ray's object store).
3. The driver merges the summaries in block order (rows, rejects, class counts, the idf's
   document frequencies: one vector of ``2**bits`` counts) and builds each split's
   :class:`~shardtrain.stages.runner.Parts`: pieces of at most ``rows_per_shard`` rows of
   one block, each with the byte range of the file that holds its rows (found by the
   reduce task), which the shard tasks load with :func:`load_piece` (a ranged read of that
   range, the piece's lines parsed, ``sample_id``, ``text``, ``label`` returned in sample
   order). A compressed file is one block, read whole by each of its pieces.

The driver holds O(files + blocks x classes + 2**bits) state and the reject records
(which the stage runner collects anyway), never the rows. With ``executor="local"`` the
same passes run in process. Every merge is in block order, so the shards are the same on
both executors and for every block size, and the same as the previous release's
whole-file reader (same rows, order, sample ids, labels, rejects; the idf is computed from
the same integer counts, so it is bit-identical).
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shardtrain.core.errors import ShardtrainError
from shardtrain.core.labels import LabelVocab
from shardtrain.readers.text import (SPLITS, Fields, Parsed, TextLayout, first_line, header_lines, no_rows_error,
                                     objects, parse_lines, reject_detail, resolve_fields, split_lines, strata_of)
from shardtrain.shards import storage
from shardtrain.shards.blocks import Block, plan_line_blocks, read_block
from shardtrain.stages.mapreduce import load_part, map_reduce, map_tasks
from shardtrain.stages.runner import Parts


@dataclass(frozen=True)
class FileBlock:
    """One block of one text file and how to read it: the split ``role`` of its file (``train`` is the
    labelled file, cut into the splits), its layout and fields, and its first data row (sample id)."""

    block: Block
    role: str
    layout: TextLayout
    fields: Fields
    first_row: int = 0

    @property
    def name(self) -> str:
        """The file's name for reject details (never a credential)."""
        return self.block.name

    def lines(self) -> tuple[list[bytes], bool]:
        """The block's data lines (a header dropped) and whether the first one is its file's first line."""
        _, lines, skip, at_start = self.read()
        return lines, at_start

    def read(self) -> tuple[bytes, list[bytes], int, bool]:
        """The block's bytes, its data lines, the header lines dropped (0 or 1), whether its first data line
        is its file's first line."""
        data = read_block(self.block)
        lines = split_lines(data)
        at_start = self.block.start == 0
        if at_start and header_lines(self.layout):
            return data, lines[1:], 1, False
        return data, lines, 0, at_start

    def begin(self) -> int:
        """The file offset of the block's first byte as :func:`read_block` returns it (its first line start)."""
        if self.block.start == 0:
            return 0
        pos = self.block.start - 1
        with storage.open_input(self.block.location) as reader:
            while pos < self.block.size:
                chunk = reader.read_at(min(1 << 16, self.block.size - pos), pos)
                hit = chunk.find(b"\n")
                if hit >= 0:
                    return pos + hit + 1
                pos += len(chunk)
        return self.block.size


@dataclass
class BlockScan:
    """What the scan pass returns for a block: its data ``rows``, the reader's rejects (``(row in the
    block, reason, detail)``), the counts of its kept, labelled rows' label cells, ``good``/``any_label``
    (file-level checks)."""

    rows: int
    rejects: list[tuple[int, str, str]]
    cells: dict[str, int]
    good: int
    any_label: bool


def _parse(fb: FileBlock) -> Parsed:
    """Read and parse a whole block."""
    lines, at_start = fb.lines()
    return parse_lines(lines, fb.layout, fb.fields, at_start)


def scan_block(fb: FileBlock) -> BlockScan:
    """Map task of the scan pass: parse the block; count rows, rejects and label cells."""
    parsed = _parse(fb)
    rejected = {r for r, _, _ in parsed.rejects}
    cells: dict[str, int] = {}
    for i, cell in enumerate(parsed.label):
        if cell and i not in rejected:
            cells[cell] = cells.get(cell, 0) + 1
    return BlockScan(len(parsed.text), parsed.rejects, cells, parsed.good, parsed.any_label)


@dataclass(frozen=True)
class StratumItem:
    """Map item of the split pass: stratum ``k`` of the labelled file, its size, and where its rows lie:
    per block (all blocks, in order) the rank of its first row of the stratum and how many it holds."""

    k: int
    size: int
    spans: tuple[tuple[int, int], ...]


def split_codes(k: int, size: int, fractions: tuple[float, ...], seed: int) -> np.ndarray:
    """The split (int8) of each row of stratum ``k`` by rank (sample order), as ``stratified_split`` cuts it.

    ``stratified_split`` gives the rows ``perm[a:b]`` split ``s``, ``perm`` the stratum's
    rows permuted by ``default_rng([seed, k])``; so the row of rank ``r`` is at position
    ``inverse[r]`` of the permutation and its split is the cut that position falls under.
    """
    perm = np.random.default_rng([int(seed) & 0xFFFFFFFFFFFFFFFF, k]).permutation(size)
    cum = np.cumsum(np.asarray(fractions, dtype=np.float64))
    cuts = np.floor(cum * size + 0.5).astype(np.int64)
    cuts[-1] = size
    position = np.empty(size, dtype=np.int64)
    position[perm] = np.arange(size, dtype=np.int64)
    return np.searchsorted(cuts, position, side="right").astype(np.int8)


def assign_stratum(item: StratumItem, fractions: tuple[float, ...], seed: int) -> tuple[list[int], list[np.ndarray]]:
    """Map task of the split pass: (rows of the stratum per split, each block's slice of split codes)."""
    codes = split_codes(item.k, item.size, fractions, seed)
    counts = np.bincount(codes, minlength=len(SPLITS)).tolist()
    return counts, [codes[start:start + n] for start, n in item.spans]


@dataclass
class Settled:
    """What the reduce of the split pass returns for a block: kept rows per split, the reader rejects
    and the vocabulary rejects as ``(split, record)`` in row order, label counts per split, and the
    training rows' document frequencies (None without idf); per split its pieces of at most
    ``rows_per_piece`` rows as ``(first row, rows, byte start, byte stop)``: the rows lie in that byte
    range of the file (an empty list for a compressed block, which is read whole)."""

    rows: list[int]
    reader_rejects: list[tuple[int, dict[str, Any]]]
    label_rejects: list[tuple[int, dict[str, Any]]]
    label_counts: np.ndarray
    df: np.ndarray | None
    train_rows: int = 0
    pieces: list[list[tuple[int, int, int, int]]] = field(default_factory=list)


@dataclass(frozen=True)
class SplitContext:
    """What every reduce task of the split pass shares: the blocks, the stratum names and item order,
    the features (for the document frequencies; None without idf)."""

    blocks: tuple[FileBlock, ...]
    names: dict[str, int]
    strata: tuple[int, ...]
    feat: Any = None
    rows_per_piece: int = 10000


def document_frequencies(texts: list[str], feat: Any) -> np.ndarray:
    """In how many of ``texts`` each hashed bucket occurs (int64, ``2**bits``): ``fit_idf``'s counts."""
    from shardtrain.features.text import TextFeatureConfig, hashed_ngrams

    width = 2 ** feat.bits
    if not texts:
        return np.zeros(width, dtype=np.int64)
    plain = TextFeatureConfig(**{**feat.__dict__, "idf": False, "norm": None})
    ids = hashed_ngrams({plain.text_col: list(texts)}, plain)["x_ids"]
    return np.bincount(np.asarray(ids.values, dtype=np.int64), minlength=width)  # ids unique per row


def _codes(fb: FileBlock, parsed: Parsed, parts: list[np.ndarray], ctx: SplitContext) -> np.ndarray:
    """The split code of every row of the block (before vocabulary rejects)."""
    n = len(parsed.text)
    if fb.role != "train":
        return np.full(n, SPLITS.index(fb.role), dtype=np.int8)
    codes = np.full(n, -1, dtype=np.int8)
    stratum = strata_of(parsed.label, {r for r, _, _ in parsed.rejects}, ctx.names)
    for k, piece in zip(ctx.strata, parts):
        mask = stratum == k
        if int(mask.sum()) != len(piece):
            raise RuntimeError(f"block {fb.block.index}: stratum {k} has {int(mask.sum())} rows, "
                               f"the plan {len(piece)}")  # internal: the scan and this pass disagree
        codes[mask] = piece
    return codes


def settle_block(j: int, parts: list[np.ndarray], vocab: LabelVocab, ctx: SplitContext) -> tuple[Settled, np.ndarray]:
    """Reduce task of the split pass: block ``j``'s split codes (-1: rejected) and its summary."""
    fb = ctx.blocks[j]
    data, lines, skip, at_start = fb.read()
    parsed = parse_lines(lines, fb.layout, fb.fields, at_start)
    codes = _codes(fb, parsed, parts, ctx)
    reader = []
    for row, reason, detail in parsed.rejects:
        reader.append((int(codes[row]), {"sample_id": fb.first_row + row, "reason": reason,
                                         "detail": reject_detail(fb.name, fb.first_row + row, fb.layout, detail)}))
        codes[row] = -1
    ok = np.flatnonzero(codes >= 0)
    labels, reasons = vocab.encode(objects([parsed.label[i] for i in ok.tolist()]))
    label_rejects = []
    for i in np.flatnonzero(reasons != "").tolist():
        row = int(ok[i])
        label_rejects.append((int(codes[row]), {
            "sample_id": fb.first_row + row, "reason": str(reasons[i]),
            "detail": f"{reject_detail(fb.name, fb.first_row + row, fb.layout, '')[:-1]} "
                      f"{vocab.detail(parsed.label[row])}"}))
        codes[row] = -1
    keep = reasons == ""
    kept_codes = codes[ok[keep]]
    counts = np.zeros((len(SPLITS), len(vocab.classes)), dtype=np.int64)
    np.add.at(counts, (kept_codes.astype(np.int64), labels[keep]), 1)
    df, train = None, ok[keep][kept_codes == 0]
    if ctx.feat is not None:
        df = document_frequencies([parsed.text[i] for i in train.tolist()], ctx.feat)
    rows = np.bincount(kept_codes.astype(np.int64), minlength=len(SPLITS)).tolist()
    pieces = _pieces(fb, data, skip, codes, ctx.rows_per_piece)
    return Settled(rows, reader, label_rejects, counts, df, len(train), pieces), codes


def _pieces(fb: FileBlock, data: bytes, skip: int, codes: np.ndarray, size: int) -> list[list[tuple[int, int, int, int]]]:
    """Per split, its rows of the block cut into pieces of ``size`` rows, each with the file's byte range
    holding them, so a shard task reads only that range (none for a compressed block)."""
    if fb.block.stop == -1:
        return [[] for _ in SPLITS]
    begin = fb.begin()
    starts = np.concatenate([[0], np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10) + 1, [len(data)]])
    out = []
    for code in range(len(SPLITS)):
        rows = np.flatnonzero(codes == code)
        mine = []
        for lo in range(0, len(rows), size):
            first, last = int(rows[lo]), int(rows[min(lo + size, len(rows)) - 1])
            mine.append((first, min(size, len(rows) - lo), begin + int(starts[first + skip]),
                         begin + int(starts[last + skip + 1])))
        out.append(mine)
    return out


@dataclass(frozen=True)
class Piece:
    """A shard task's piece of a split: rows ``[lo, hi)`` of block ``fb``'s rows in split ``code``.

    ``codes`` is the handle of the block's split codes (an ObjectRef on Ray, the array
    locally); ``vocab`` encodes the labels. ``span`` ``(first row, byte start, byte stop)``: the
    piece's rows are the first ``hi - lo`` rows of the split from data row ``first`` of the
    block on, all within that byte range of the file (None: read the whole block).
    """

    fb: FileBlock
    code: int
    lo: int
    hi: int
    codes: Any
    vocab: LabelVocab
    span: tuple[int, int, int] | None = None


def load_piece(piece: Piece) -> dict[str, Any]:
    """Load one piece in a shard task: read its byte range (or its block), parse only its rows' lines."""
    codes = np.asarray(load_part(piece.codes))
    fb = piece.fb
    if piece.span is None:
        lines, at_start = fb.lines()
        rows = np.flatnonzero(codes == piece.code)[piece.lo:piece.hi]
        picked = [lines[i] for i in rows.tolist()]
        at_start = at_start and len(rows) > 0 and rows[0] == 0
    else:
        first, start, stop = piece.span
        data = b""
        if stop > start:
            with storage.open_input(fb.block.location) as reader:
                data = reader.read_at(stop - start, start)
        lines = split_lines(data)
        rows = first + np.flatnonzero(codes[first:first + len(lines)] == piece.code)
        picked = [lines[i - first] for i in rows.tolist()]
        at_start = start == 0 and not header_lines(fb.layout)
    if len(rows) != piece.hi - piece.lo:
        raise RuntimeError(f"block {fb.block.index}: a piece planned with {piece.hi - piece.lo} rows "
                           f"has {len(rows)}")  # internal: a planning bug
    parsed = parse_lines(picked, fb.layout, fb.fields, bool(at_start))
    labels, reasons = piece.vocab.encode(objects(parsed.label))
    if parsed.rejects or (reasons != "").any():
        raise RuntimeError(f"block {fb.block.index}: a planned row was rejected on loading")  # internal
    return {"sample_id": (fb.first_row + rows).astype(np.int64), "text": objects(parsed.text), "label": labels}


@dataclass
class TextPlan:
    """The planned splits: per split its :class:`Parts` source and its rejects; the vocabulary, the
    document frequencies and training row count (for the idf), and the index's ``extra``."""

    sources: dict[str, Parts]
    rejects: dict[str, list[dict[str, Any]]]
    vocab: LabelVocab
    df: np.ndarray | None
    train_rows: int
    extra: dict[str, Any] = field(default_factory=dict)

    def idf(self) -> np.ndarray | None:
        """The smooth idf of the training split, as ``fit_idf`` computes it: ``ln((1 + n) / (1 + df)) + 1``."""
        if self.df is None:
            return None
        return (np.log((1.0 + self.train_rows) / (1.0 + self.df)) + 1.0).astype(np.float32)


def plan_files(files: dict[str, storage.Location], layouts: dict[str, TextLayout],
               block_bytes: int) -> list[FileBlock]:
    """The blocks of every file (in split order), each with its file's fields (from the header line)."""
    out: list[FileBlock] = []
    for role, location in files.items():
        layout = layouts[role]
        header = first_line(location) if header_lines(layout) else None
        fields = resolve_fields(location, header, layout)
        try:
            blocks = plan_line_blocks([location], block_bytes)
        except FileNotFoundError:
            raise ShardtrainError(f"{storage.redact(location)}: text data file not found") from None
        out += [FileBlock(b, role, layout, fields) for b in blocks]
    return out


def _number(blocks: list[FileBlock], scans: list[BlockScan],
            files: dict[str, storage.Location]) -> list[FileBlock]:
    """Blocks with their global index and first row; the file-level checks (no rows, no readable line)."""
    out, first = [], {}
    for i, (fb, scan) in enumerate(zip(blocks, scans)):
        start = first.get(fb.role, 0)
        out.append(FileBlock(Block(**{**fb.block.__dict__, "index": i, "file_index": list(files).index(fb.role)}),
                             fb.role, fb.layout, fb.fields, start))
        first[fb.role] = start + scan.rows
    for role, location in files.items():
        mine = [(fb, s) for fb, s in zip(out, scans) if fb.role == role]
        if sum(s.rows for _, s in mine) == 0:
            raise ShardtrainError(f"{storage.redact(location)}: no data rows")
        if sum(s.good for _, s in mine) == 0:
            raise no_rows_error(location, mine[0][0].layout, mine[0][0].fields)
    return out


def _strata(blocks: list[FileBlock], scans: list[BlockScan]) -> tuple[dict[str, int], list[StratumItem]]:
    """The labelled file's stratum names and one map item per non-empty stratum (with every block's span)."""
    main = [s if fb.role == "train" else None for fb, s in zip(blocks, scans)]
    names = {c: i for i, c in enumerate(sorted({c for s in main if s for c in s.cells}))}
    other = len(names)
    per_block = np.zeros((len(blocks), other + 1), dtype=np.int64)
    for b, s in enumerate(main):
        if s is None:
            continue
        for cell, n in s.cells.items():
            per_block[b, names[cell]] = n
        per_block[b, other] = s.rows - sum(s.cells.values())
    starts = np.cumsum(per_block, axis=0) - per_block
    items = [StratumItem(k, int(per_block[:, k].sum()),
                         tuple((int(starts[b, k]), int(per_block[b, k])) for b in range(len(blocks))))
             for k in range(other + 1) if per_block[:, k].sum() > 0]
    return names, items


def _vocab(counts: list[list[int]], items: list[StratumItem], names: dict[str, int],
           classes: tuple[str, ...] | None) -> LabelVocab:
    """``between`` of the split pass: the vocabulary from the strata with training rows (or ``classes``)."""
    by_index = {i: c for c, i in names.items()}
    train = [by_index[it.k] for it, c in zip(items, counts) if it.k in by_index and c[0] > 0]
    return LabelVocab.fit(train, classes)


def plan_text(files: dict[str, storage.Location], layouts: dict[str, TextLayout], fractions: tuple[float, ...],
              outputs: tuple[str, ...], seed: int, classes: tuple[str, ...] | None, feat: Any,
              block_bytes: int, rows_per_piece: int, executor: str) -> TextPlan:
    """Plan the splits of a ``text`` dataset (see the module doc); ``files["train"]`` is the labelled file,
    ``fractions`` its split (0 for a split given as a file), ``feat`` the hashing options (its idf is
    counted when ``feat.idf``)."""
    blocks = plan_files(files, layouts, block_bytes)
    scans = map_tasks(scan_block, blocks, executor)
    blocks = _number(blocks, scans, files)
    names, items = _strata(blocks, scans)
    ctx = SplitContext(tuple(blocks), names, tuple(it.k for it in items), feat if feat.idf else None,
                       rows_per_piece)
    between = functools.partial(_vocab, items=items, names=names, classes=classes)
    counts, settled, handles = map_reduce(_assign_map, [(it, tuple(fractions), seed) for it in items],
                                          settle_block, len(blocks), executor, ctx, between=between)
    vocab = _vocab(counts, items, names, classes)
    return _merge(blocks, settled, handles, vocab, files, outputs, rows_per_piece,
                  {"kind": "stratified", "seed": seed, "fractions": list(fractions)})


def _assign_map(item: tuple[StratumItem, tuple[float, ...], int], ctx: SplitContext) -> tuple[list[int], list]:
    """``assign_stratum`` as ``map_reduce`` calls it (the shared context is not needed here)."""
    return assign_stratum(*item)


def _merge(blocks: list[FileBlock], settled: list[Settled], handles: list[Any], vocab: LabelVocab,
           files: dict[str, storage.Location], outputs: tuple[str, ...], rows_per_piece: int,
           rule: dict[str, Any]) -> TextPlan:
    """Merge the blocks' summaries in block order into the split sources, rejects and counts."""
    sources, rejects, counts = {}, {}, {}
    given = set(files) - {"train"}
    for split in outputs:
        code, role = SPLITS.index(split), split if split in given else "train"
        parts, reader, labelled = [], [], []
        total = np.zeros(len(vocab.classes), dtype=np.int64)
        for fb, s, handle in zip(blocks, settled, handles):
            if fb.role != role:
                continue
            n = s.rows[code]
            if s.pieces[code]:
                lo = 0
                for first, count, start, stop in s.pieces[code]:
                    parts.append((Piece(fb, code, lo, lo + count, handle, vocab, (first, start, stop)), count))
                    lo += count
            elif fb.block.stop != -1:                        # no row of this split: an empty piece
                parts.append((Piece(fb, code, 0, 0, handle, vocab, (0, 0, 0)), 0))
            else:                                            # a compressed block is read whole
                for lo in range(0, max(n, 1), rows_per_piece):
                    hi = min(lo + rows_per_piece, n)
                    parts.append((Piece(fb, code, lo, hi, handle, vocab), hi - lo))
            reader += [r for c, r in s.reader_rejects if c == code]
            labelled += [r for c, r in s.label_rejects if c == code]
            total += s.label_counts[code]
        sources[split] = Parts(parts, load_piece)
        rejects[split] = reader + labelled
        counts[split] = {c: int(total[k]) for k, c in enumerate(vocab.classes)}
    df = None
    if any(s.df is not None for s in settled):
        df = np.zeros_like(next(s.df for s in settled if s.df is not None))
        for s in settled:                                   # block order (integer sums: any order is exact)
            if s.df is not None:
                df += s.df
    train_rows = sum(s.train_rows for fb, s in zip(blocks, settled) if fb.role == "train")
    extra = {"split_rule": rule, "split_counts": counts,
             "files": {s: storage.basename(loc) for s, loc in files.items()}}
    return TextPlan(sources, rejects, vocab, df, train_rows, extra)


def current_executor() -> str:
    """``ray`` when this process has started Ray (the stage runner does, for ``--executor ray``), else
    ``local``: for ``augment_jobs``, which is not told the executor. Either gives the same plan."""
    ray = sys.modules.get("ray")
    return "ray" if ray is not None and ray.is_initialized() else "local"
