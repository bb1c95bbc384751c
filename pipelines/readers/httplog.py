"""Web-server access logs in Common or Combined Log Format: block reader and columnar parser.

    host ident user [dd/Mon/yyyy:HH:MM:SS +zzzz] "METHOD path [PROTOCOL]" status bytes
    host ident user [...] "METHOD path PROTOCOL" status bytes "referer" "user agent"   (Combined)

The host may be a name, an IPv4 or an IPv6 address; ``bytes`` may be ``-`` (read as 0).

``iter_line_blocks`` cuts a file into blocks of ``block_lines`` lines (numbered from 1);
``parse_clf`` parses one block with Arrow compute kernels and numpy, never a Python loop
per line: one RE2 match decides which lines are well formed, space splits cut the
fields, and the timestamp is decoded from its fixed-width bytes. Bad lines keep their
row with a ``reject_reason`` (the runner's rejects contract) and the line itself in
``reject_detail``. Blocks are independent, so the runner may parse them on Ray workers;
``build_http_dataset`` then sessionises the concatenated blocks
(``shardtrain.features.logs``) and cuts the splits.
"""

from __future__ import annotations

import dataclasses
import gzip
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shardtrain.core.errors import ShardtrainError
from shardtrain.features import logs

_QUOTED = r'"(?:[^"\\]|\\.)*"'  # a double-quoted field, backslash escapes allowed (Apache's %{Referer}i)
_COMBINED_TAIL_RX = rf" {_QUOTED} {_QUOTED}$"  # the Combined format's "referer" "user agent"
_COMBINED_FIELDS_RX = r'(?: "(?P<referer>(?:[^"\\]|\\.)*)" "(?P<user_agent>(?:[^"\\]|\\.)*)")?$'
_STRICT_RX = (
    r'^\S+ \S+ \S+ \[\d{2}/[A-Za-z]{3}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4}\] '
    r'"[A-Za-z]+ \S.*" \d{3} (?:\d{1,18}|-)' + rf"(?: {_QUOTED} {_QUOTED})?$"
)
# Diagnosis of lines that fail _STRICT_RX, most specific first (run on rejected lines only).
_PREFIX_RX = r"^\S+ \S+ \S+ \["
_LOOSE_RX = r'^\S+ \S+ \S+ \[[^\]]*\] ".*" \S+ \S+$'
_EXTRA_RX = r'^\S+ \S+ \S+ \[[^\]]*\] ".*" \S+ \S+ .+$'
_FIELD_CHECKS = (  # (reason, regex a loose line must match)
    ("bad_timestamp", r"^\S+ \S+ \S+ \[\d{2}/[A-Za-z]{3}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4}\] "),
    ("bad_request", r'\] "[A-Za-z]+ \S.*" \S+ \S+$'),
    ("bad_status", r'" \d{3} \S+$'),
    ("bad_bytes", r'" \S+ (?:\d{1,18}|-)$'),
)
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_PROTO_RX = r" HTTP/\d+\.\d+$"


@dataclass(frozen=True)
class HttpLogOptions:
    """Options of the nasa-http dataset (``dataset.options`` in the config).

    ``first_k`` requests feed the features; labels look past them, so ``long_n`` must be
    >= ``first_k``. Connections with fewer than ``min_requests`` requests are dropped
    (None = first_k: a live predictor decides at the k-th request, and shorter
    connections never reach it; with 1 they are kept, their labels trivially 0).
    Connections starting in the log's last ``tail_horizon_seconds`` are dropped (their
    outcome is mostly unknown; dropping by start time alone does not bias the labels),
    and ``censor_tail`` masks (-1) the labels of the few remaining ones that may go on
    after the log ends. ``split_rule`` "time" puts the earliest-starting connections in
    train (honest for logs); "hash" splits by a seeded hash of the connection id.
    ``block_lines`` sizes the blocks of this module's in-memory reader
    (``iter_line_blocks``); the prepare stage cuts its blocks by ``prepare.block_bytes``.
    """

    __pydantic_config__ = {"extra": "forbid"}  # validated from the config by pydantic; unknown keys are errors

    gap_seconds: int = 1800
    first_k: int = 3
    long_n: int = 10
    min_requests: int | None = None
    block_lines: int = 65536
    split_rule: Literal["time", "hash"] = "time"
    split_fractions: tuple[float, ...] = (0.7, 0.15, 0.15)
    tail_horizon_seconds: int = 3600
    censor_tail: bool = True
    max_reject_fraction: float = 0.01
    detail_chars: int = 200

    def __post_init__(self) -> None:
        """Check value ranges; a bad value names its ``dataset.options`` key."""
        bad = None
        if self.gap_seconds <= 0:
            bad = ("gap_seconds", "> 0")
        elif self.first_k < 1:
            bad = ("first_k", ">= 1")
        elif self.long_n < self.first_k:
            bad = ("long_n", f">= first_k ({self.first_k}), else the features reveal the label")
        elif self.tail_horizon_seconds < 0:
            bad = ("tail_horizon_seconds", ">= 0")
        elif self.min_requests is not None and self.min_requests < 1:
            bad = ("min_requests", ">= 1")
        elif self.block_lines < 1:
            bad = ("block_lines", ">= 1")
        elif self.split_rule not in ("time", "hash"):
            bad = ("split_rule", "'time' or 'hash'")
        elif (len(self.split_fractions) != 3 or min(self.split_fractions) < 0
              or abs(sum(self.split_fractions) - 1) > 1e-6):
            bad = ("split_fractions", "3 non-negative numbers summing to 1")
        elif not 0.0 <= self.max_reject_fraction <= 1.0:
            bad = ("max_reject_fraction", "in [0, 1]")
        if bad:
            value = getattr(self, bad[0])
            raise ShardtrainError(f"config key 'dataset.options.{bad[0]}': {value!r} must be {bad[1]}")


def lines_from_bytes(body: bytes) -> pa.StringArray:
    """Cut newline-terminated bytes into a StringArray of lines (no copy per line).

    Invalid UTF-8 is replaced by U+FFFD (the line then usually still parses); a
    trailing CR of CRLF files is dropped.
    """
    arr = _split_on_newlines(body)
    try:
        arr = arr.cast(pa.string())  # validates UTF-8 over the whole block at once
    except pa.ArrowInvalid:
        arr = _split_on_newlines(body.decode("utf-8", errors="replace").encode("utf-8")).cast(pa.string())
    return pc.utf8_rtrim(arr, characters="\r\n")


def _split_on_newlines(body: bytes) -> pa.Array:
    """A binary array over ``body`` whose elements end at each b"\\n" (newline included)."""
    raw = np.frombuffer(body, dtype=np.uint8)
    ends = np.flatnonzero(raw == 10) + 1
    kind, otype = (pa.binary(), np.int32) if len(body) < 2**31 else (pa.large_binary(), np.int64)
    offsets = np.r_[0, ends].astype(otype)
    return pa.Array.from_buffers(kind, ends.size, [None, pa.py_buffer(offsets), pa.py_buffer(body)])


def iter_line_blocks(
    path: str | Path, block_lines: int, chunk_bytes: int = 1 << 22
) -> Iterator[tuple[int, pa.StringArray]]:
    """Yield ``(first_line_no, lines)`` blocks of ``block_lines`` lines (the last may be shorter).

    Line numbers start at 1. A last line without a newline is still yielded. The file
    is read in ``chunk_bytes`` pieces, so memory stays bounded by a block; a ``.gz`` file
    is decompressed as it is read.
    """
    path = Path(path)
    try:
        f = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")
    except OSError as e:
        raise ShardtrainError(f"{path}: cannot open log file ({e.strerror})") from e
    next_line, buf, carry = 1, pa.array([], pa.string()), b""
    with f:
        while True:
            try:
                chunk = f.read(chunk_bytes)
            except (OSError, EOFError) as e:  # a corrupt or truncated .gz
                raise ShardtrainError(f"{path}: cannot read log file ({e})") from e
            data = carry + chunk
            if not chunk and data and not data.endswith(b"\n"):
                data += b"\n"
            cut = data.rfind(b"\n") + 1
            carry = data[cut:]
            if cut:
                buf = pa.concat_arrays([buf, lines_from_bytes(data[:cut])])
            while len(buf) >= block_lines:
                yield next_line, buf.slice(0, block_lines)
                next_line, buf = next_line + block_lines, buf.slice(block_lines)
            if not chunk:
                break
    if len(buf):
        yield next_line, buf


def _as_lines(lines: Any) -> pa.Array:
    """Normalise str/bytes input (Arrow or numpy) to a string array without trailing CR/LF."""
    if isinstance(lines, pa.ChunkedArray):
        lines = lines.combine_chunks()
    if not isinstance(lines, pa.Array):
        lines = pa.array(np.asarray(lines).tolist())
    if pa.types.is_null(lines.type):  # an empty list, or only None
        lines = lines.cast(pa.string())
    if pa.types.is_binary(lines.type) or pa.types.is_large_binary(lines.type):
        try:
            lines = lines.cast(pa.string())
        except pa.ArrowInvalid:  # rare: invalid UTF-8, decode line by line with replacement
            text = [None if b is None else b.decode("utf-8", "replace") for b in lines.to_pylist()]
            lines = pa.array(text, pa.string())
    if not (pa.types.is_string(lines.type) or pa.types.is_large_string(lines.type)):
        raise ShardtrainError(f"parse_clf: expected strings or bytes, got Arrow type {lines.type}")
    return pc.utf8_rtrim(lines.fill_null(""), characters="\r\n")


def _fixed_width(arr: pa.Array, width: int) -> np.ndarray:
    """The bytes of a string array whose elements all have ``width`` bytes, as uint8 (N, width)."""
    if len(arr) == 0:
        return np.zeros((0, width), np.uint8)
    bufs = arr.buffers()
    otype = np.int64 if pa.types.is_large_string(arr.type) else np.int32
    offsets = np.frombuffer(bufs[1], dtype=otype)[arr.offset : arr.offset + len(arr) + 1]
    assert np.all(np.diff(offsets) == width), "fixed-width field guaranteed by _STRICT_RX"
    # equal lengths => the values are back to back: a zero-copy (N, width) view
    return np.frombuffer(bufs[2], dtype=np.uint8)[offsets[0] : offsets[-1]].reshape(len(arr), width)


def _timestamps(date_tok: pa.Array, tz_tok: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode ``[dd/Mon/yyyy:HH:MM:SS`` and ``+zzzz]`` tokens: (epoch s int64, offset s int32, valid)."""
    c = _fixed_width(date_tok, 21).astype(np.int32)  # (N, 21) bytes
    d = c - ord("0")
    day = d[:, 1] * 10 + d[:, 2]
    key = ((c[:, 4] | 32) << 16) | ((c[:, 5] | 32) << 8) | (c[:, 6] | 32)  # lower-cased month name
    keys = np.array([(ord(m[0]) << 16) | (ord(m[1]) << 8) | ord(m[2]) for m in _MONTHS])
    month = np.zeros(len(key), np.int64)
    for i, k in enumerate(keys):  # 12 vectorised comparisons
        month[key == k] = i + 1
    year = d[:, 8].astype(np.int64) * 1000 + d[:, 9] * 100 + d[:, 10] * 10 + d[:, 11]
    hh, mi, ss = d[:, 13] * 10 + d[:, 14], d[:, 16] * 10 + d[:, 17], d[:, 19] * 10 + d[:, 20]
    z = _fixed_width(tz_tok, 6).astype(np.int32) - ord("0")  # (N, 6): sign, hhmm, "]"
    sign = np.where(z[:, 0] == ord("-") - ord("0"), -1, 1)
    tz_h, tz_m = z[:, 1] * 10 + z[:, 2], z[:, 3] * 10 + z[:, 4]
    offset = sign * (tz_h * 3600 + tz_m * 60)
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    dim = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])[month] + (leap & (month == 2))
    valid = (month > 0) & (day >= 1) & (day <= dim) & (hh < 24) & (mi < 60) & (ss <= 60)
    valid &= (tz_h <= 14) & (tz_m < 60)
    # days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil)
    y = year - (month <= 2)
    era = np.floor_divide(y, 400)
    yoe = y - era * 400
    doy = (153 * ((month + 9) % 12) + 2) // 5 + day - 1
    days = era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468
    epoch = days * 86400 + hh * 3600 + mi * 60 + ss - offset
    return epoch, offset.astype(np.int32), valid


def _diagnose(bad: pa.Array) -> np.ndarray:
    """Why each line in ``bad`` (lines that failed the strict pattern) is malformed."""
    n = len(bad)
    reason = np.full(n, "malformed_line", dtype=object)
    bad = pc.replace_substring_regex(bad, _COMBINED_TAIL_RX, "")  # judge the CLF part of a Combined line

    def hit(rx: str) -> np.ndarray:
        return pc.match_substring_regex(bad, rx).to_numpy(zero_copy_only=False)

    loose = hit(_LOOSE_RX)
    undecided = loose.copy()
    for name, rx in _FIELD_CHECKS:
        fail = undecided & ~hit(rx)
        reason[fail] = name
        undecided &= ~fail
    extra = ~loose & hit(_EXTRA_RX)
    reason[extra] = "extra_fields"
    prefix = hit(_PREFIX_RX)
    reason[~loose & ~extra & prefix] = "truncated_line"
    reason[~prefix] = "garbage_line"
    reason[pc.utf8_length(bad).to_numpy(zero_copy_only=False) == 0] = "empty_line"
    return reason


def _fields(good: pa.Array) -> dict[str, Any]:
    """Cut lines that passed ``_STRICT_RX`` into fields: Arrow strings, numpy numbers, ``ts_ok``."""
    extra = pc.extract_regex(good, _COMBINED_FIELDS_RX)  # "" for CLF lines
    good = pc.replace_substring_regex(good, _COMBINED_TAIL_RX, "")  # the CLF part
    tail = pc.split_pattern(good, " ", max_splits=2, reverse=True)  # [head, status, bytes]
    head = pc.split_pattern(pc.list_element(tail, 0), " ", max_splits=5)  # host ident user date tz "req"
    epoch, offset, ts_ok = _timestamps(pc.list_element(head, 3), pc.list_element(head, 4))
    inner = pc.utf8_slice_codeunits(pc.list_element(head, 5), 1, -1)  # request without its quotes
    method_rest = pc.split_pattern(inner, " ", max_splits=1)
    rest = pc.list_element(method_rest, 1)
    has_proto = pc.match_substring_regex(rest, _PROTO_RX)
    path_proto = pc.split_pattern(rest, " ", max_splits=1, reverse=True)
    proto = pc.list_slice(path_proto, 1, 2, return_fixed_size_list=True).flatten()
    nbytes = pc.list_element(tail, 2)
    nbytes = pc.if_else(pc.equal(nbytes, "-"), "0", nbytes)
    return {
        "host": pc.list_element(head, 0),
        "ts": epoch,
        "tz_offset": offset,
        "method": pc.list_element(method_rest, 0),
        "path": pc.if_else(has_proto, pc.list_element(path_proto, 0), rest),
        "protocol": pc.if_else(has_proto, proto, ""),
        "status": pc.cast(pc.list_element(tail, 1), pa.int16()).to_numpy(zero_copy_only=False),
        "bytes": pc.cast(nbytes, pa.int64()).to_numpy(zero_copy_only=False),
        "referer": pc.struct_field(extra, "referer") if len(good) else pa.array([], pa.string()),
        "user_agent": pc.struct_field(extra, "user_agent") if len(good) else pa.array([], pa.string()),
        "ts_ok": ts_ok,
    }


def parse_clf(lines: Any, first_line_no: int | np.ndarray, detail_chars: int = 200) -> dict[str, Any]:
    """Parse CLF lines into columns; every input line keeps its row.

    ``lines``: Arrow/numpy array (or list) of str or bytes; ``first_line_no``: line
    number of ``lines[0]`` (or an int64 array of the line numbers). Returns numpy
    ``sample_id``/``line_no`` (int64), ``ts`` (int64 UTC epoch seconds, offset applied),
    ``tz_offset`` (int32 s east of UTC), ``status`` (int16), ``bytes`` (int64, "-" -> 0),
    Arrow string columns ``host``, ``method``, ``path``, ``protocol`` ("" if absent),
    ``referer`` and ``user_agent`` (Combined format; "" for CLF lines), and
    ``reject_reason``/``reject_detail`` (object; "" for good lines). Rejected rows hold
    zeros and empty strings.
    """
    arr = _as_lines(lines)
    n = len(arr)
    if np.ndim(first_line_no) == 0:
        line_no = np.arange(n, dtype=np.int64) + int(first_line_no)
    else:
        line_no = np.asarray(first_line_no, dtype=np.int64)
    ok = np.array(pc.match_substring_regex(arr, _STRICT_RX).to_numpy(zero_copy_only=False), dtype=bool)
    fields = _fields(arr.filter(pa.array(ok)))
    reason = np.full(n, "", dtype=object)
    reason[~ok] = _diagnose(arr.filter(pa.array(~ok)))
    src = np.full(n, -1, np.int64)  # row of `fields` feeding each output row, -1 = rejected
    src[ok] = np.where(fields["ts_ok"], np.arange(int(ok.sum())), -1)
    reason[ok & (src < 0)] = "bad_timestamp"
    detail = np.full(n, "", dtype=object)
    rej = np.flatnonzero(src < 0)
    if rej.size:
        detail[rej] = pc.utf8_slice_codeunits(arr.take(pa.array(rej)), 0, detail_chars).to_pylist()
    kept = src >= 0
    index = pa.array(src, mask=~kept)
    out: dict[str, Any] = {"sample_id": line_no, "line_no": line_no.copy()}
    for key in ("host", "ts", "tz_offset", "method", "path", "protocol", "status", "bytes", "referer", "user_agent"):
        col = fields[key]
        if isinstance(col, pa.Array):
            out[key] = col.take(index).fill_null("")
        else:
            out[key] = np.zeros(n, dtype=col.dtype)
            out[key][kept] = col[src[kept]]
    out["reject_reason"] = reason
    out["reject_detail"] = detail
    return out


def parse_batch(batch: dict[str, Any], cfg: Any = None) -> dict[str, Any]:
    """Stage form of ``parse_clf``: ``{"sample_id": line numbers, "line": str}`` -> parsed columns."""
    return parse_clf(batch["line"], np.asarray(batch["sample_id"], dtype=np.int64))


def concat_parsed(blocks: list[dict[str, Any]]) -> dict[str, Any]:
    """Concatenate parsed blocks column by column (Arrow columns stay Arrow)."""
    if not blocks:
        return parse_clf(pa.array([], pa.string()), 1)
    out: dict[str, Any] = {}
    for key in blocks[0]:
        cols = [b[key] for b in blocks]
        if isinstance(cols[0], (pa.Array, pa.ChunkedArray)):
            out[key] = pa.concat_arrays([logs.as_arrow(c) for c in cols])
        else:
            out[key] = np.concatenate(cols)
    return out


def http_connections(
    parsed: dict[str, Any], options: HttpLogOptions, source: str = "http log", drop_tail: bool = True
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Sessionise parsed lines into connections with features and labels, plus the counts.

    ``parsed``: ``concat_parsed`` of every block (rejected rows included; they are
    counted and dropped here). Fails when the rejected share exceeds
    ``options.max_reject_fraction``. Connections shorter than ``min_requests`` are
    dropped; with ``drop_tail`` also those starting in the log's last
    ``tail_horizon_seconds`` (prepare; predict keeps them, their open labels -1).
    """
    reason = np.asarray(parsed["reject_reason"], dtype=object)
    n_lines = reason.size
    rej = np.flatnonzero(reason != "")
    if n_lines == 0 or rej.size > options.max_reject_fraction * n_lines:
        first = f"; first: line {parsed['line_no'][rej[0]]} {reason[rej[0]]}" if rej.size else ""
        raise ShardtrainError(
            f"{source}: {rej.size} of {n_lines} lines rejected (max_reject_fraction "
            f"{options.max_reject_fraction}){first}"
        )
    sessions = logs.sessionize(parsed, options.gap_seconds)
    log_end = int(np.max(sessions["ts"]))
    conn = logs.connection_features(sessions, options.first_k, options.long_n,
                                    log_end if options.censor_tail else None, options.gap_seconds)
    short = conn["n_requests"] < (options.first_k if options.min_requests is None else options.min_requests)
    late = conn["start_ts"] > log_end - options.tail_horizon_seconds if drop_tail else np.zeros_like(short)
    conn = {k: v[~short & ~late] for k, v in conn.items()}
    reasons, counts = np.unique(reason[rej], return_counts=True)
    stats = {
        "source": source,
        "lines": int(n_lines),
        "requests": int(n_lines - rej.size),
        "connections": int(short.size),
        "dropped_short": int(short.sum()),
        "dropped_tail": int((late & ~short).sum()),
        "rejects": {
            "count": int(rej.size),
            "reasons": {str(r): int(c) for r, c in zip(reasons, counts)},
            "rows": {
                "sample_id": np.asarray(parsed["line_no"])[rej],
                "reason": reason[rej],
                "detail": np.asarray(parsed["reject_detail"], dtype=object)[rej],
            },
        },
    }
    return conn, stats


def build_http_dataset(
    parsed: dict[str, Any], options: HttpLogOptions, seed: int, source: str = "http log",
    test: dict[str, Any] | None = None, test_source: str = "test log",
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, Any]]:
    """Sessionise all parsed lines, compute connection features and cut the splits.

    ``parsed``: ``concat_parsed`` of every block. With ``test`` (a second parsed log),
    that log is the test split and ``parsed`` is cut into train and val only (in the
    ratio of ``split_fractions``' first two). Standardisation is fitted on train.
    Returns ``{split: columns}`` and metadata (``meta["test"]``: the test log's counts).
    """
    conn, stats = http_connections(parsed, options, source)
    test_conn, test_stats = http_connections(test, options, test_source) if test is not None else (None, None)
    fractions = tuple(options.split_fractions)
    splits, split_meta = logs.split_and_standardise(conn, options.split_rule, fractions, seed, test=test_conn)
    meta = {
        **{k: v for k, v in stats.items() if k != "source"},
        "source": source,
        "feature_names": list(logs.FEATURE_NAMES),
        "labels": {k: {"classes": v} for k, v in logs.LABEL_CLASSES.items()},
        "split": split_meta,
        "options": dataclasses.asdict(options),
    }
    if test_stats is not None:
        meta["test"] = test_stats
    return splits, meta


def build_http_predict(
    parsed: dict[str, Any], options: HttpLogOptions, transform: dict[str, Any], source: str = "http log"
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Connections of a new log as the training run saw them: features standardised with ``transform``.

    ``transform`` is the train index's ``transform`` (``standardisation`` mean/std and
    ``feature_names``). Connections near the log's end are kept (a live predictor
    decides at the k-th request); their labels are -1 when the log ends before the
    outcome is known, so a labelled file can be scored on the rest.
    """
    names = list(transform.get("feature_names", []))
    if names != list(logs.FEATURE_NAMES):
        raise ShardtrainError(f"{source}: the run's features {names[:3]}... are not this version's "
                              f"{list(logs.FEATURE_NAMES)[:3]}...; prepare and train again")
    conn, stats = http_connections(parsed, options, source, drop_tail=False)
    std = transform["standardisation"]
    x = logs.standardise(conn["x"], np.asarray(std["mean"]), np.asarray(std["std"]))
    cols = {"sample_id": conn["sample_id"], "x": x, "label_error": conn["label_error"],
            "label_long": conn["label_long"]}
    return cols, stats


def prepare_http_log(
    path: str | Path, options: HttpLogOptions | None = None, seed: int = 0
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, Any]]:
    """Read, parse (block by block, in process), sessionise and featurise one CLF log file.

    The runner can instead map ``parse_clf`` over ``iter_line_blocks`` on Ray workers and
    call ``build_http_dataset`` on ``concat_parsed`` of the results: same output.
    """
    options = options or HttpLogOptions()
    blocks = [
        parse_clf(lines, first, options.detail_chars)
        for first, lines in iter_line_blocks(path, options.block_lines)
    ]
    return build_http_dataset(concat_parsed(blocks), options, seed, source=str(path))
