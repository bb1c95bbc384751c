"""Web-server log features: parsed requests -> connections -> one float32 vector per connection.

A *connection* (session) is the run of requests of one client host with no pause longer
than ``gap_seconds`` between consecutive requests. Sessionisation runs on all of a host's
rows at once (the whole log, or one host partition of the prepare shuffle: a connection's
features depend on its own rows only, so both give the same numbers), so a session that
straddles a block or shard boundary is still one connection. Its id is the line number of its first request,
which depends on the data only (never on block size or worker).

Features describe only the connection's first ``first_k`` requests; the labels look at
what happens afterwards (``label_error``: a 4xx/5xx among requests k+1..n;
``label_long``: more than ``long_n`` requests in all), so the features cannot contain the
answer. A connection shorter than k gets features over the requests it has (``n_seen``
< k says so) and labels 0 (nothing follows); the nasa-http reader drops such
connections by default (``HttpLogOptions.min_requests``). Connections that may still be
running when the log ends (last request within ``gap_seconds`` of the log's last
timestamp) get label -1 (missing) unless already positive.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shardtrain.core.seeding import GOLDEN, as_uint64, mix64, seed_array, to_unit

FEATURE_NAMES: tuple[str, ...] = (
    "n_seen",  # requests in the window: min(n, k)
    "log1p_duration_s",  # first -> last request of the window
    "log1p_bytes_total",
    "log1p_bytes_mean",
    "distinct_path_share",  # distinct paths / n_seen
    "share_3xx",
    "share_4xx",
    "share_5xx",
    "zero_bytes_share",  # bodies of 0 bytes or "-" (mostly 304 Not Modified)
    "request_rate",  # n_seen / (duration + 1 s)
    "log1p_gap_mean",
    "log1p_gap_max",
    "log1p_gap_std",
    "hour_sin",  # local hour of the first request, on the circle
    "hour_cos",
    "image_share",  # .gif .jpg .jpeg .png .xbm
    "page_share",  # directory index or .htm/.html
    "get_share",
    "head_share",
    "post_share",
    "host_is_ip",  # client given as an IPv4 or IPv6 address (no reverse DNS)
)
LABEL_CLASSES: dict[str, list[str]] = {
    "label_error": ["no_error", "error"],
    "label_long": ["short", "long"],
}
SPLITS: tuple[str, ...] = ("train", "val", "test")

_IMAGE_RX = r"(?i)\.(gif|jpe?g|png|xbm)(\?.*)?$"
_PAGE_RX = r"(?i)(/|\.html?)(\?.*)?$"
_IP_RX = r"^(\d{1,3}(\.\d{1,3}){3}|\[?[0-9A-Fa-f]*:[0-9A-Fa-f:.]*\]?)$"  # IPv4 dotted quad or IPv6


def hash_unit(seed: int, ids: np.ndarray) -> np.ndarray:
    """A uniform number in [0, 1) for each id, a pure function of (seed, id) (splitmix64).

    Used for seeded splits that do not depend on row order, block size or worker.
    """
    # One SplitMix64 step from the state id + seed * G.
    with np.errstate(over="ignore"):
        return to_unit(mix64(as_uint64(ids) + seed_array(seed) * np.uint64(GOLDEN) + np.uint64(GOLDEN)))


def as_arrow(col: Any) -> pa.Array:
    """A column of strings as one contiguous Arrow array (numpy object arrays are converted)."""
    if isinstance(col, pa.ChunkedArray):
        return col.combine_chunks()
    if isinstance(col, pa.Array):
        return col
    return pa.array(np.asarray(col, dtype=object), type=pa.string())


def _codes(col: Any) -> tuple[np.ndarray, pa.Array]:
    """Dictionary-encode a string column: (int64 codes (N,), dictionary of distinct values)."""
    enc = pc.dictionary_encode(as_arrow(col))
    return enc.indices.to_numpy(zero_copy_only=False).astype(np.int64), enc.dictionary


def _take(col: Any, order: np.ndarray) -> Any:
    """Reorder a numpy or Arrow column by integer positions."""
    if isinstance(col, (pa.Array, pa.ChunkedArray)):
        return as_arrow(col).take(pa.array(order))
    return np.asarray(col)[order]


def sessionize(parsed: dict[str, Any], gap_seconds: int = 1800) -> dict[str, Any]:
    """Group requests into connections per host; returns the rows in connection order.

    Sorts by (host, ts, line_no); a new connection starts at a new host or after a pause
    of more than ``gap_seconds`` (a pause of exactly ``gap_seconds`` continues it). Rows
    with a non-empty ``reject_reason`` are dropped first. Adds ``conn_id`` (int64, line
    number of the connection's first request) and ``req_index`` (int32, 0-based position
    in its connection); rows come out sorted by (conn_id, ts, line_no).
    """
    if "reject_reason" in parsed:
        keep = np.flatnonzero(np.asarray(parsed["reject_reason"], dtype=object) == "")
        parsed = {k: _take(v, keep) for k, v in parsed.items() if k not in ("reject_reason", "reject_detail")}
    ts = np.asarray(parsed["ts"], dtype=np.int64)
    line_no = np.asarray(parsed["line_no"], dtype=np.int64)
    n = ts.size
    if n == 0:
        out = dict(parsed)
        out["conn_id"] = np.zeros(0, np.int64)
        out["req_index"] = np.zeros(0, np.int32)
        return out
    host, _ = _codes(parsed["host"])
    order = np.lexsort((line_no, ts, host))  # (N,) host-major
    h, t = host[order], ts[order]
    new = np.ones(n, dtype=bool)
    new[1:] = (h[1:] != h[:-1]) | (np.diff(t) > gap_seconds)
    seg = np.cumsum(new) - 1  # (N,) connection index of each sorted row
    conn_sorted = line_no[order][np.flatnonzero(new)][seg]
    conn_id = np.empty(n, np.int64)
    conn_id[order] = conn_sorted
    final = np.lexsort((line_no, ts, conn_id))  # connections in order of first line
    out = {k: _take(v, final) for k, v in parsed.items()}
    out["conn_id"] = conn_id[final]
    cid = out["conn_id"]
    starts = np.flatnonzero(np.r_[True, cid[1:] != cid[:-1]])
    counts = np.diff(np.r_[starts, n])
    out["req_index"] = (np.arange(n) - np.repeat(starts, counts)).astype(np.int32)
    return out


def _segments(conn_id: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For rows grouped by connection: starts (M,), counts (M,), segment (N,), rank in segment (N,)."""
    n = conn_id.size
    starts = np.flatnonzero(np.r_[True, conn_id[1:] != conn_id[:-1]]) if n else np.zeros(0, np.int64)
    counts = np.diff(np.r_[starts, n]).astype(np.int64)
    seg = np.repeat(np.arange(starts.size), counts)
    return starts, counts, seg, np.arange(n) - np.repeat(starts, counts)


def _flags(col: Any, patterns: dict[str, str]) -> dict[str, np.ndarray]:
    """Per-row bool (N,) for each regex, evaluated once per distinct value of the string column."""
    codes, values = _codes(col)
    return {
        name: np.asarray(pc.match_substring_regex(values, rx).to_numpy(zero_copy_only=False), bool)[codes]
        for name, rx in patterns.items()
    }


def _window_columns(s: dict[str, Any], seg: np.ndarray, starts: np.ndarray, win: np.ndarray,
                    kk: np.ndarray) -> list[np.ndarray]:
    """The FEATURE_NAMES columns (each (M,)) from the rows in ``win`` (the first k per connection)."""
    m = starts.size
    sw = seg[win]

    def share(v: np.ndarray) -> np.ndarray:  # mean over the window of a per-row quantity
        return np.bincount(sw, weights=np.asarray(v, np.float64)[win], minlength=m) / np.maximum(kk, 1)

    ts = np.asarray(s["ts"], dtype=np.int64)
    status = np.asarray(s["status"], dtype=np.int64) // 100
    nbytes = np.asarray(s["bytes"], dtype=np.float64)
    duration = (ts[starts + kk - 1] - ts[starts]).astype(np.float64)
    gaps = np.r_[0.0, np.diff(ts)].astype(np.float64)
    gaps[starts] = 0.0  # a connection's first request has no gap before it
    n_gaps = np.maximum(kk - 1, 1)
    gap_mean = share(gaps) * kk / n_gaps
    gap_std = np.sqrt(np.maximum(share(gaps**2) * kk / n_gaps - gap_mean**2, 0.0))
    gap_max = np.maximum.reduceat(gaps[win], np.r_[0, np.cumsum(kk)[:-1]]) if m else np.zeros(0)
    pcode, paths = _codes(s["path"])
    width = np.int64(len(paths) + 1)
    distinct = np.bincount(np.unique(sw * width + pcode[win]) // width, minlength=m)
    path = _flags(s["path"], {"image": _IMAGE_RX, "page": _PAGE_RX})
    method = _flags(s["method"], {"GET": "^GET$", "HEAD": "^HEAD$", "POST": "^POST$"})
    host_ip = _flags(s["host"], {"ip": _IP_RX})["ip"]
    tz = np.asarray(s.get("tz_offset", np.zeros(ts.size)), dtype=np.int64)
    hour = ((ts[starts] + tz[starts]) % 86400) / 3600.0  # local clock of the first request
    return [
        kk, np.log1p(duration), np.log1p(share(nbytes) * kk), np.log1p(share(nbytes)),
        distinct / np.maximum(kk, 1), share(status == 3), share(status == 4), share(status == 5),
        share(nbytes == 0), kk / (duration + 1.0),
        np.log1p(gap_mean), np.log1p(gap_max), np.log1p(gap_std),
        np.sin(2 * np.pi * hour / 24.0), np.cos(2 * np.pi * hour / 24.0),
        share(path["image"]), share(path["page"]),
        share(method["GET"]), share(method["HEAD"]), share(method["POST"]), host_ip[starts],
    ]


def connection_features(
    sessions: dict[str, Any],
    first_k: int = 3,
    long_n: int = 10,
    log_end_ts: int | None = None,
    gap_seconds: int = 1800,
) -> dict[str, np.ndarray]:
    """One feature vector and two labels per connection, from ``sessionize``'s output.

    Features use requests with ``req_index < first_k`` only; ``label_error`` (a status
    >= 400 after them) and ``label_long`` (more than ``long_n`` requests) use the rest.
    With ``log_end_ts``, connections whose last request is within ``gap_seconds`` of it
    may continue past the end of the log: their labels are -1 unless already 1.
    Returns ``sample_id`` (conn_id, int64 (M,)), ``x`` float32 (M, F) in FEATURE_NAMES
    order, ``label_error``/``label_long`` int64 (M,), ``start_ts`` and ``n_requests``.
    """
    if first_k < 1:
        raise ValueError("first_k must be >= 1")  # internal: options are validated upstream
    cid = np.asarray(sessions["conn_id"], dtype=np.int64)
    ts = np.asarray(sessions["ts"], dtype=np.int64)
    starts, counts, seg, rank = _segments(cid)
    win = rank < first_k  # (N,) rows the features may look at
    kk = np.minimum(counts, first_k)  # (M,) n_seen
    cols = _window_columns(sessions, seg, starts, win, kk)
    x = np.stack([np.asarray(c, dtype=np.float64) for c in cols], axis=1).astype(np.float32)  # (M, F)
    x = x.reshape(starts.size, len(FEATURE_NAMES))

    later = ~win  # (N,) rows only the labels may look at
    status = np.asarray(sessions["status"], dtype=np.int64)
    err_later = np.bincount(seg[later], weights=status[later] >= 400, minlength=starts.size) > 0
    is_long = counts > long_n
    label_error = err_later.astype(np.int64)
    label_long = is_long.astype(np.int64)
    if log_end_ts is not None and starts.size:
        still_open = (log_end_ts - ts[starts + counts - 1]) <= gap_seconds  # may go on after the log
        label_error[still_open & ~err_later] = -1
        label_long[still_open & ~is_long] = -1
    return {
        "sample_id": cid[starts],
        "x": x,
        "label_error": label_error,
        "label_long": label_long,
        "start_ts": ts[starts],
        "n_requests": counts,
    }


def assign_splits(
    conn: dict[str, np.ndarray], rule: str, fractions: tuple[float, float, float], seed: int
) -> np.ndarray:
    """Split code per connection (0 train, 1 val, 2 test).

    ``rule="time"``: connections ordered by (start_ts, sample_id); the first
    ``fractions[0]`` of them are train, the next ``fractions[1]`` val, the rest test, so
    a model is always evaluated on traffic later than what it was trained on.
    ``rule="hash"``: by ``hash_unit(seed, sample_id)`` (seeded, order-free).
    """
    ids = np.asarray(conn["sample_id"], dtype=np.int64)
    bounds = np.cumsum(np.asarray(fractions, dtype=np.float64))[:2]
    if rule == "hash":
        return np.searchsorted(bounds, hash_unit(seed, ids), side="right").astype(np.int8)
    order = np.lexsort((ids, np.asarray(conn["start_ts"], dtype=np.int64)))
    rank = np.empty(ids.size, np.int64)
    rank[order] = np.arange(ids.size)
    cuts = np.round(bounds * ids.size).astype(np.int64)
    return np.searchsorted(cuts, rank, side="right").astype(np.int8)


def fit_standardiser(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std (float64 (F,)) of ``x`` (N, F); a constant feature gets std 1."""
    if x.shape[0] == 0:
        return np.zeros(x.shape[1]), np.ones(x.shape[1])
    mean = x.mean(axis=0, dtype=np.float64)
    std = x.std(axis=0, dtype=np.float64)
    return mean, np.where(std > 1e-12, std, 1.0)


def standardise(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``(x - mean) / std`` per feature, in float64, returned as float32 (N, F)."""
    return ((np.asarray(x, np.float64) - mean) / std).astype(np.float32)


def split_and_standardise(
    conn: dict[str, np.ndarray], rule: str, fractions: tuple[float, float, float], seed: int,
    test: dict[str, np.ndarray] | None = None,
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, Any]]:
    """Cut connections into train/val/test and standardise x with train-only statistics.

    With ``test`` (the connections of a separate test log) ``conn`` is cut into train and
    val only, in the ratio ``fractions[0] : fractions[1]``, and ``test`` is the test split.
    Returns ``{split: {"sample_id", "x", "label_error", "label_long"}}`` and a metadata
    dict with the split rule, per-split counts, label balance and the (mean, std) used.
    """
    if test is not None:
        total = fractions[0] + fractions[1]
        fractions = (fractions[0] / total, fractions[1] / total, 0.0)
    code = assign_splits(conn, rule, fractions, seed)
    mean, std = fit_standardiser(conn["x"][code == 0].astype(np.float64))
    splits: dict[str, dict[str, np.ndarray]] = {}
    balance: dict[str, dict[str, dict[str, int]]] = {}
    for i, name in enumerate(SPLITS):
        src, sel = (test, np.arange(len(test["sample_id"]))) if test is not None and i == 2 \
            else (conn, np.flatnonzero(code == i))
        splits[name] = {
            "sample_id": src["sample_id"][sel],
            "x": standardise(src["x"][sel], mean, std),  # (n_split, F)
            "label_error": src["label_error"][sel],
            "label_long": src["label_long"][sel],
        }
        balance[name] = {
            lab: {str(v): int(c) for v, c in zip(*np.unique(src[lab][sel], return_counts=True))}
            for lab in LABEL_CLASSES
        }
    meta = {
        "rule": rule if test is None else f"{rule} (train/val), test log (test)",
        "fractions": list(fractions),
        "seed": seed,
        "counts": {name: int(len(splits[name]["sample_id"])) for name in SPLITS},
        "label_counts": balance,
        "standardisation": {"fit_split": "train", "mean": mean.tolist(), "std": std.tolist()},
    }
    return splits, meta
