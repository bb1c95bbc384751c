"""KDD Cup 1999 connection records (41 features + label, gzip CSV) -> dense features and two labels.

Reading is one Arrow CSV pass per file (typed; re-read as strings only when a numeric
field does not parse, to find which). Lines with the wrong field count, empty lines,
missing or non-numeric fields become rejects with their line number; a file whose
rejected share exceeds ``max_reject_fraction`` fails with one ShardtrainError line.

Features: the 38 numeric columns (``log1p`` first for heavy-tailed counts and byte
totals, whose raw values span 0..1e9 and would swamp everything else), standardised
with mean/std of the train split, then one-hot ``protocol_type``, ``service``, ``flag``
with the train split's vocabulary (a value never seen in train gives an all-zero
one-hot and is counted). The train split is the training file minus a seeded,
per-attack-stratified validation carve-out; the test split is ``corrected``.

Labels: ``label_attack`` (0 normal, 1 attack) and ``label_category`` (index into
CATEGORIES) from ``training_attack_types`` plus the published categories of the attacks
that occur only in the test file; where sources disagree the category is -1 (masked).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from shardtrain.core.errors import ShardtrainError
from shardtrain.features.logs import hash_unit
from shardtrain.shards import storage

COLUMNS: tuple[str, ...] = (
    "duration", "protocol_type", "service", "flag", "src_bytes", "dst_bytes", "land", "wrong_fragment",
    "urgent", "hot", "num_failed_logins", "logged_in", "num_compromised", "root_shell", "su_attempted",
    "num_root", "num_file_creations", "num_shells", "num_access_files", "num_outbound_cmds",
    "is_host_login", "is_guest_login", "count", "srv_count", "serror_rate", "srv_serror_rate",
    "rerror_rate", "srv_rerror_rate", "same_srv_rate", "diff_srv_rate", "srv_diff_host_rate",
    "dst_host_count", "dst_host_srv_count", "dst_host_same_srv_rate", "dst_host_diff_srv_rate",
    "dst_host_same_src_port_rate", "dst_host_srv_diff_host_rate", "dst_host_serror_rate",
    "dst_host_srv_serror_rate", "dst_host_rerror_rate", "dst_host_srv_rerror_rate", "label",
)  # order of kddcup.names, then the label
SYMBOLIC: tuple[str, ...] = ("protocol_type", "service", "flag")
NUMERIC: tuple[str, ...] = tuple(c for c in COLUMNS if c not in SYMBOLIC and c != "label")
CATEGORIES: tuple[str, ...] = ("normal", "dos", "probe", "r2l", "u2r")
# Attacks found only in `corrected`, with the categories of the DARPA 1998/99 attack
# descriptions (MIT Lincoln Lab) that NSL-KDD and most papers use. httptunnel (r2l in
# some sources, u2r in others) and worm (dos or r2l) are disputed: category -1.
TEST_ONLY_CATEGORIES: dict[str, str] = {
    "apache2": "dos", "mailbomb": "dos", "processtable": "dos", "udpstorm": "dos",
    "mscan": "probe", "saint": "probe",
    "named": "r2l", "sendmail": "r2l", "snmpgetattack": "r2l", "snmpguess": "r2l",
    "xlock": "r2l", "xsnoop": "r2l",
    "ps": "u2r", "sqlattack": "u2r", "xterm": "u2r",
}
DISPUTED: tuple[str, ...] = ("httptunnel", "worm")
LOG1P_COLUMNS: tuple[str, ...] = (
    "duration", "src_bytes", "dst_bytes", "wrong_fragment", "urgent", "hot", "num_failed_logins",
    "num_compromised", "num_root", "num_file_creations", "num_shells", "num_access_files",
    "count", "srv_count", "dst_host_count", "dst_host_srv_count",
)
_NUMBER_RX = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"
_REASONS = ("", "non_numeric_field", "missing_field", "empty_line")
_MAX_DETAILS = 10000  # details beyond this many rejected records per file are left empty


@dataclass(frozen=True)
class Kdd99Options:
    """Options of the kdd99 dataset (``dataset.options`` in the config)."""

    __pydantic_config__ = {"extra": "forbid"}  # validated from the config by pydantic; unknown keys are errors

    val_fraction: float = 0.1
    log1p_columns: tuple[str, ...] = LOG1P_COLUMNS
    drop_duplicates: bool = False
    max_reject_fraction: float = 0.01
    detail_chars: int = 200
    train_path: str | None = None  # file, glob or directory (local or URI); default: the registry's 10% file
    test_path: str | None = None  # the same for the test split; default: the registry's corrected.gz

    def __post_init__(self) -> None:
        """Check value ranges; a bad value names its ``dataset.options`` key."""
        unknown = sorted(set(self.log1p_columns) - set(NUMERIC))
        key = "config key 'dataset.options"
        if not 0.0 <= self.val_fraction < 1.0:
            raise ShardtrainError(f"{key}.val_fraction': {self.val_fraction!r} must be in [0, 1)")
        if unknown:
            raise ShardtrainError(f"{key}.log1p_columns': {unknown} are not numeric KDD columns")
        if not 0.0 <= self.max_reject_fraction <= 1.0:
            value = self.max_reject_fraction
            raise ShardtrainError(f"{key}.max_reject_fraction': {value!r} must be in [0, 1]")


def read_attack_types(path: storage.Location) -> dict[str, str]:
    """Parse ``training_attack_types`` (``attack category`` per line; a path or a URI) into a dict."""
    path = storage.redact(path)  # how messages name it
    try:
        lines = storage.read_bytes(path).decode("utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ShardtrainError(f"{path}: cannot read attack types ({e})") from e
    out: dict[str, str] = {}
    for i, line in enumerate(lines, 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or parts[1] not in CATEGORIES[1:]:
            raise ShardtrainError(
                f"{path}:{i}: expected 'attack category' with category in {CATEGORIES[1:]}, got {line!r}"
            )
        out[parts[0]] = parts[1]
    return out


def _read_csv(path: Path | bytes, numeric_type: pa.DataType) -> tuple[pa.Table, list[tuple[int, str]]]:
    """One Arrow CSV pass over a file or bytes; returns the table and (line number, text) of wrong-field-count lines."""
    invalid: list[tuple[int, str]] = []

    def on_invalid(row: Any) -> str:
        invalid.append((row.number, row.text))  # row.number is known because use_threads=False
        return "skip"

    types = {c: (numeric_type if c in NUMERIC else pa.string()) for c in COLUMNS}
    if isinstance(path, bytes) and not path:  # Arrow refuses an empty CSV: an empty block has no rows
        return pa.table({c: pa.array([], t) for c, t in types.items()}), invalid
    source = pa.BufferReader(path) if isinstance(path, bytes) else pa.input_stream(str(path), compression="detect")
    with source as stream:
        table = pcsv.read_csv(
            stream,
            read_options=pcsv.ReadOptions(column_names=list(COLUMNS), use_threads=False),
            parse_options=pcsv.ParseOptions(
                quote_char=False, ignore_empty_lines=False, invalid_row_handler=on_invalid
            ),
            convert_options=pcsv.ConvertOptions(column_types=types),
        )
    return table, invalid


def _numeric_columns(table: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Numeric fields as float64 (38, N) (bad ones set to 0), reason code (N,) int8, culprit (N,) int16."""
    n = table.num_rows
    code = np.zeros(n, dtype=np.int8)  # index into _REASONS
    culprit = np.zeros(n, dtype=np.int16)  # field at fault: index into (*NUMERIC, *SYMBOLIC, "label")
    numeric = np.zeros((len(NUMERIC), n))  # (38, N): column by column, contiguous writes
    for j in reversed(range(len(NUMERIC))):  # reversed: the first bad column wins
        col = table.column(NUMERIC[j])
        if pa.types.is_string(col.type):  # slow path: the typed read failed somewhere
            missing = pc.equal(pc.utf8_length(col), 0).to_numpy()
            parses = pc.match_substring_regex(col, _NUMBER_RX).to_numpy()
            numeric[j] = np.nan  # flags the fields that do not parse
            numeric[j, parses] = pc.cast(col.filter(pa.array(parses)), pa.float64()).to_numpy()
        else:
            missing = col.is_null().to_numpy() if col.null_count else np.zeros(n, dtype=bool)
            numeric[j] = col.to_numpy()  # nulls -> nan
        bad = ~np.isfinite(numeric[j]) | missing
        if bad.any():
            code[bad] = np.where(missing[bad], 2, 1)
            culprit[bad] = j
            numeric[j, bad] = 0.0
    return numeric, code, culprit


def _reject_rows(
    table: pa.Table, line_no: np.ndarray, code: np.ndarray, culprit: np.ndarray,
    invalid: list[tuple[int, str]], detail_chars: int,
) -> dict[str, np.ndarray]:
    """Rejected records in line order: ``sample_id`` (line number), ``reason``, ``detail``."""
    rows = np.flatnonzero(code > 0)
    names = (*NUMERIC, *SYMBOLIC, "label")
    details = [
        f"{names[culprit[i]]} is empty" if code[i] == 2 else
        f"{names[culprit[i]]}={table.column(names[culprit[i]])[int(i)].as_py()!r}" if code[i] == 1 else ""
        for i in rows[:_MAX_DETAILS]
    ]
    details += [""] * (rows.size - len(details))
    lines = np.r_[line_no[rows], [num for num, _ in invalid]].astype(np.int64)
    reasons = np.r_[np.asarray(_REASONS, dtype=object)[code[rows]], ["wrong_field_count"] * len(invalid)]
    detail = np.array(details + [text[:detail_chars] for _, text in invalid], dtype=object)
    order = np.argsort(lines, kind="stable")
    return {"sample_id": lines[order], "reason": reasons[order].astype(object), "detail": detail[order]}


def read_kdd_file(
    path: str | Path | bytes, max_reject_fraction: float = 0.01, detail_chars: int = 200, name: str | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read one KDD file (gzip or plain; or its bytes, named ``name`` in messages) into columns, with its rejects.

    Returns ``(columns, rejects)``: ``columns`` has ``line_no`` int64 (N,), ``numeric``
    float64 (N, 38) in NUMERIC order, Arrow strings ``protocol_type``/``service``/``flag``
    and ``attack`` (label without its final "."); ``rejects`` has ``count``, ``reasons``
    and ``rows`` (``sample_id`` = line number, ``reason``, ``detail``).
    """
    name = name or str(path)
    columns, rows, n_lines = parse_kdd(path, detail_chars, name=name)
    check_rejects(name, rows, n_lines, max_reject_fraction)
    return columns, reject_summary(rows)


def check_rejects(name: str, rows: dict[str, np.ndarray], n_lines: int, max_reject_fraction: float) -> None:
    """One ShardtrainError line when ``name`` has no line or rejects more than ``max_reject_fraction`` of them."""
    n_rej = len(rows["sample_id"])
    if n_lines == 0 or n_rej > max_reject_fraction * n_lines:
        first = f"; first: line {rows['sample_id'][0]} {rows['reason'][0]}" if n_rej else ""
        raise ShardtrainError(f"{name}: {n_rej} of {n_lines} lines rejected "
                              f"(max_reject_fraction {max_reject_fraction}){first}")


def reject_summary(rows: dict[str, np.ndarray]) -> dict[str, Any]:
    """``count``, ``reasons`` (reason -> count, sorted by name) and the ``rows`` themselves."""
    reasons, counts = np.unique(rows["reason"].astype(str), return_counts=True)
    return {"count": len(rows["sample_id"]), "reasons": dict(zip(map(str, reasons), map(int, counts))), "rows": rows}


def parse_kdd(
    path: str | Path | bytes, detail_chars: int = 200, first_line: int = 1, name: str | None = None,
) -> tuple[dict[str, Any], dict[str, np.ndarray], int]:
    """KDD records of a file, or of bytes starting at line ``first_line``: ``(columns, reject rows, lines)``.

    No reject-fraction check: a caller reading a file in blocks checks it once (:func:`check_rejects`).
    """
    try:
        try:
            table, invalid = _read_csv(path, pa.float64())
        except pa.ArrowInvalid:  # a numeric field did not parse: re-read as text to find which
            table, invalid = _read_csv(path, pa.string())
    except (OSError, pa.ArrowInvalid) as e:  # bytes are named by the caller's ``name``
        raise ShardtrainError(f"{name or path}: cannot read KDD records ({str(e).splitlines()[0]})") from e
    n_lines = table.num_rows + len(invalid)
    bad_line = np.zeros(n_lines + 1, dtype=bool)
    bad_line[[num for num, _ in invalid]] = True
    line_no = np.flatnonzero(~bad_line[1:]) + first_line  # (N,) physical line of each table row
    invalid = [(num + first_line - 1, text) for num, text in invalid]

    numeric, code, culprit = _numeric_columns(table)
    strings = {c: table.column(c).combine_chunks() for c in (*SYMBOLIC, "label")}
    empty = {c: pc.equal(pc.utf8_length(v), 0).to_numpy(zero_copy_only=False) for c, v in strings.items()}
    for j, col in reversed(list(enumerate(strings))):
        code[empty[col]] = 2
        culprit[empty[col]] = len(NUMERIC) + j
    if n_lines:
        code[np.all(list(empty.values()), axis=0) & (code == 2)] = 3  # every field empty: an empty line
    rejects = _reject_rows(table, line_no, code, culprit, invalid, detail_chars)
    columns: dict[str, Any] = {"line_no": line_no, "numeric": numeric.T}  # (N, 38) column-major view
    columns.update({c: strings[c] for c in SYMBOLIC})
    columns["attack"] = pc.utf8_rtrim(strings["label"], characters=".\r")
    if np.any(code):
        columns = _subset(columns, code == 0)
    return columns, rejects, n_lines


def _subset(cols: dict[str, Any], mask: np.ndarray) -> dict[str, Any]:
    """Rows of ``mask`` (bool (N,)) from a dict of numpy and Arrow columns."""
    sel = pa.array(mask)
    out = {}
    for k, v in cols.items():
        if isinstance(v, pa.Array):
            out[k] = v.filter(sel)
        else:  # keep (N, 38) numeric column-major (a transposed view), as read_kdd_file makes it
            out[k] = v.T[..., mask].T if v.ndim == 2 else v[mask]
    return out


def category_map(attack_types: dict[str, str]) -> dict[str, str]:
    """Attack name -> category: normal, the training types, then the test-only attacks."""
    return {"normal": "normal", **TEST_ONLY_CATEGORIES, **attack_types}


def labels(attack: pa.Array, categories: dict[str, str]) -> tuple[np.ndarray, np.ndarray]:
    """``label_attack`` (0 normal / 1 attack) and ``label_category`` (CATEGORIES index, -1 unknown)."""
    names = sorted(categories)
    table = np.array([CATEGORIES.index(categories[n]) for n in names] + [-1], dtype=np.int64)
    idx = pc.index_in(attack, value_set=pa.array(names, pa.string())).fill_null(len(names))
    category = table[idx.to_numpy(zero_copy_only=False)]  # an unmapped name hits the trailing -1
    is_attack = pc.not_equal(attack, "normal").to_numpy(zero_copy_only=False).astype(np.int64)
    return is_attack, category


def validation_mask(attack: pa.Array, line_no: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Seeded validation rows, stratified by attack name: round(fraction * n_class) per class.

    Within a class, rows are ranked by ``hash_unit(seed, line_no)``, so the choice
    depends on (seed, row) only, not on file order beyond the line number.
    """
    codes = pc.dictionary_encode(attack).indices.to_numpy(zero_copy_only=False).astype(np.int64)
    order = np.lexsort((line_no, hash_unit(seed, line_no), codes))
    sorted_codes = codes[order]
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
    sizes = np.diff(np.r_[starts, codes.size])
    rank = np.arange(codes.size) - np.repeat(starts, sizes)
    take = np.repeat(np.round(fraction * sizes).astype(np.int64), sizes)
    mask = np.zeros(codes.size, dtype=bool)
    mask[order[rank < take]] = True
    return mask


def _numeric_by_column(num: np.ndarray, log_cols: np.ndarray) -> np.ndarray:
    """(38, N) float64: the numeric columns of ``num`` (N, 38), signed log1p where ``log_cols``."""
    out = np.empty((num.shape[1], num.shape[0]))
    for j in range(num.shape[1]):
        out[j] = num[:, j]
        if log_cols[j]:  # signed log1p, in place
            np.copysign(np.log1p(np.abs(out[j])), out[j], out=out[j])
    return out


def _features(
    part: dict[str, Any], num: np.ndarray, mean: np.ndarray, std: np.ndarray, vocab: dict[str, list[str]]
) -> tuple[np.ndarray, dict[str, dict[str, int]]]:
    """x float32 (N, 38 + sum(V)): standardised numerics ``num`` (38, N), then one-hot blocks.

    Also returns the counts of values missing from ``vocab`` (their one-hot rows are zero).
    """
    n = num.shape[1]
    num -= mean[:, None]  # in place: num is a temporary of the caller
    num /= std[:, None]
    x = np.zeros((n, num.shape[0] + sum(len(v) for v in vocab.values())), dtype=np.float32)
    x[:, : num.shape[0]] = num.T
    unknown, offset = {}, num.shape[0]
    for c in SYMBOLIC:
        idx = pc.index_in(part[c], value_set=pa.array(vocab[c], pa.string()))
        known = idx.is_valid().to_numpy(zero_copy_only=False)
        x[np.flatnonzero(known), offset + idx.drop_null().to_numpy().astype(np.int64)] = 1.0
        unseen = part[c].filter(pa.array(~known)).value_counts().to_pylist()  # all-zero one-hot rows
        unknown[c] = {d["values"]: int(d["counts"]) for d in unseen}
        offset += len(vocab[c])
    return x, unknown


def _dedupe(cols: dict[str, Any]) -> dict[str, Any]:
    """Keep the first of each group of identical records (all 41 features and the label)."""
    import pandas as pd  # exact row hashing + equality; only needed for this option

    codes = [
        pc.dictionary_encode(cols[c]).indices.to_numpy(zero_copy_only=False) for c in (*SYMBOLIC, "attack")
    ]
    frame = pd.DataFrame(np.column_stack([cols["numeric"], *codes]))  # (N, 42) float64
    return _subset(cols, ~frame.duplicated(keep="first").to_numpy())


def _encode_splits(
    parts: dict[str, dict[str, Any]], log_cols: np.ndarray, categories: dict[str, str]
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, Any]]:
    """Features and labels of every split, with vocabulary and statistics fitted on ``parts["train"]``."""
    train_num = _numeric_by_column(parts["train"]["numeric"], log_cols)  # (38, N_train)
    mean = train_num.mean(axis=1)
    std = train_num.std(axis=1)
    std = np.where(std > 1e-12, std, 1.0)  # num_outbound_cmds is constant 0 in KDD
    vocab = {c: sorted(pc.unique(parts["train"][c]).to_pylist()) for c in SYMBOLIC}
    splits: dict[str, dict[str, np.ndarray]] = {}
    fitted: dict[str, Any] = {"vocab": vocab, "mean": mean, "std": std, "unknown": {}, "attack_counts": {}}
    for name, part in parts.items():
        if name == "train":  # reuse (and then drop) the transformed train columns
            num, train_num = train_num, None
        else:
            num = _numeric_by_column(part["numeric"], log_cols)
        x, fitted["unknown"][name] = _features(part, num, mean, std, vocab)
        is_attack, category = labels(part["attack"], categories)
        splits[name] = {"sample_id": part["line_no"].astype(np.int64), "x": x,
                        "label_attack": is_attack, "label_category": category}
        counts = part["attack"].value_counts().to_pylist()
        fitted["attack_counts"][name] = {d["values"]: int(d["counts"]) for d in counts}
    return splits, fitted


def prepare_kdd99(
    train_path: str | Path | bytes, test_path: str | Path | bytes, types_path: str | Path,
    options: Kdd99Options | None = None, seed: int = 0, names: tuple[str, str] | None = None,
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, Any]]:
    """Read both KDD files (paths, or their bytes named by ``names``) in memory: ``{train, val, test}`` and metadata.

    Each split has ``sample_id`` (line number in its source file), ``x`` float32 (N, F),
    ``label_attack`` and ``label_category`` (int64, -1 = unknown). Vocabularies and
    standardisation statistics come from the train split only and are in the metadata.
    """
    options = options or Kdd99Options()
    categories = category_map(read_attack_types(types_path))
    names = names or (None, None)
    train_cols, train_rej = read_kdd_file(train_path, options.max_reject_fraction, options.detail_chars, names[0])
    test_cols, test_rej = read_kdd_file(test_path, options.max_reject_fraction, options.detail_chars, names[1])
    n_read = len(train_cols["line_no"])
    if options.drop_duplicates:
        train_cols = _dedupe(train_cols)
    val = validation_mask(train_cols["attack"], train_cols["line_no"], options.val_fraction, seed)
    parts = {"train": _subset(train_cols, ~val), "val": _subset(train_cols, val), "test": test_cols}
    log_cols = np.isin(np.array(NUMERIC), np.array(options.log1p_columns, dtype=object))  # (38,)
    splits, fitted = _encode_splits(parts, log_cols, categories)
    vocab = fitted["vocab"]
    feature_names = [("log1p_" if lg else "") + c for c, lg in zip(NUMERIC, log_cols)]
    feature_names += [f"{c}={v}" for c in SYMBOLIC for v in vocab[c]]
    meta = {
        "feature_names": feature_names,
        "labels": {
            "label_attack": {"classes": ["normal", "attack"]},
            "label_category": {"classes": list(CATEGORIES)},
        },
        "vocab": vocab,
        "standardisation": {
            "fit_split": "train", "columns": list(NUMERIC), "log1p_columns": list(options.log1p_columns),
            "mean": fitted["mean"].tolist(), "std": fitted["std"].tolist(),
        },
        "category_map": categories,
        "category_disputed": list(DISPUTED),
        "unknown_categories": fitted["unknown"],
        "attack_counts": fitted["attack_counts"],
        "counts": {k: len(v["sample_id"]) for k, v in splits.items()},
        "duplicates_dropped": n_read - len(train_cols["line_no"]),
        "val_rule": {"fraction": options.val_fraction, "seed": seed, "stratified_by": "attack name",
                     "key": "hash_unit(seed, line_no)"},
        "rejects": {"train": train_rej, "test": test_rej},
        "options": dataclasses.asdict(options),
    }
    return splits, meta
