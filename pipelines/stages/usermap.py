"""A user's own batch function after a kind's transform: ``prepare.map`` / ``augment.map``.

``prepare.map: "mypkg.feats:add_ratio"`` names a pure function ``fn(batch, ctx) -> batch``
that runs in every shard task right after the dataset kind's own stage function, on
both executors. It is resolved by import inside the task's process (cached per
process, never at import of this module), so its module must be importable there:
``shardtrain submit`` ships it (``cluster/jobs.py``).

``batch`` holds the kind's kept rows (rows the kind rejected never reach it); ``ctx`` is
a frozen :class:`MapContext` (``stage``, ``split``, ``seed``, ``shard``, ``rows``,
``options``). The function may add columns, replace ``x`` (any dense numeric shape) and
add ``reject_reason`` (+ ``reject_detail``) to reject rows; it must keep every column
the kind produced, ``sample_id`` and the row order; its input arrays are read-only (return
new ones). An exception inside it becomes one
:class:`ShardtrainError` line naming the function, the stage/split, the shard and the
row range.

:func:`wrap_job` turns any :class:`~shardtrain.stages.runner.SplitJob` (prepare,
augment, or a predict job) into one whose ``fn`` is a :class:`MappedFn`;
:func:`check_spec` validates a spec at plan time; :func:`source_identity` hashes the
module's file for the stage fingerprint.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, ClassVar, Mapping

import numpy as np
import pyarrow as pa

from shardtrain.core.errors import ShardtrainError
from shardtrain.stages.runner import SplitJob, StageFn

# spec -> (function, digest of its module's file), per process (a Ray worker resolves once)
_RESOLVED: dict[str, tuple[Callable[..., Any], str]] = {}


@dataclass(frozen=True)
class MapContext:
    """What a user map function knows of the batch it is given.

    ``rows`` is the batch's ``(start, stop)`` row range in the split's source (half open);
    ``shard`` the output shard's name (``part-00001-of-00004``); ``options`` the config's
    ``map_options`` (read-only). ``ctx["seed"]`` works as well as ``ctx.seed``.
    """

    stage: str
    split: str
    seed: int
    shard: str
    rows: tuple[int, int]
    options: Mapping[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        """Dict-style access to the same fields (``ctx["options"]``)."""
        if key not in self.__dataclass_fields__:
            raise KeyError(key)
        return getattr(self, key)


def _split_spec(spec: Any, key: str) -> tuple[str, str]:
    """``"pkg.mod:fn"`` -> ``("pkg.mod", "fn")``, or a one-line error naming the config key."""
    if not isinstance(spec, str) or spec.count(":") != 1 or not all(part.strip() for part in spec.split(":")):
        raise ShardtrainError(f"config key '{key}': {spec!r} must be 'package.module:function'")
    module, name = spec.split(":")
    return module.strip(), name.strip()


def _module_digest(module_name: str) -> str:
    """sha256 of the module's source file, located without running it ("no-file" when it has none)."""
    found = importlib.util.find_spec(module_name)
    origin = getattr(found, "origin", None)
    try:
        return hashlib.sha256(Path(origin).read_bytes()).hexdigest() if origin else "no-file"
    except OSError:
        return "no-file"


def resolve(spec: str, key: str = "prepare.map", digest: str | None = None) -> Callable[..., Any]:
    """Import ``spec``'s module and return its function; errors name the config ``key``.

    Cached per process with the digest of the module's file (``digest``: the one the
    driver saw, else read now): when the file changed since it was cached, the module is
    reloaded, so an edited function is what a re-run stage uses, in a notebook too.
    """
    cached = _RESOLVED.get(spec)
    if cached is not None and digest is not None and cached[1] == digest:
        return cached[0]  # the per-batch path: no file read
    module_name, name = _split_spec(spec, key)
    try:
        want = digest or _module_digest(module_name)
        if cached is not None and cached[1] == want:
            return cached[0]
        module = importlib.import_module(module_name)
        if cached is not None:  # imported before, and its file changed since
            module = importlib.reload(module)
    except Exception as exc:  # any failure while importing user code is the spec's fault
        raise ShardtrainError(f"config key '{key}': cannot import module {module_name!r} of {spec!r} "
                              f"({type(exc).__name__}: {_one_line(exc)})") from exc
    fn = getattr(module, name, None)
    if fn is None:
        raise ShardtrainError(f"config key '{key}': module {module_name!r} has no attribute {name!r}")
    if not callable(fn):
        raise ShardtrainError(f"config key '{key}': {spec} is a {type(fn).__name__}, not a function")
    _RESOLVED[spec] = (fn, want)
    return fn


def check_spec(spec: str | None, key: str) -> None:
    """Fail now (plan time, before any output directory) when ``spec`` cannot be resolved."""
    if spec is not None:
        resolve(spec, key)


def source_identity(spec: str | None, key: str = "prepare.map") -> str | None:
    """``spec`` plus the sha256 of its module's file, for the stage fingerprint (None without a spec).

    Only the module's own file is hashed: an edit there re-runs the stage, an edit in a
    module it imports does not (use ``--force`` then).
    """
    if spec is None:
        return None
    resolve(spec, key)
    return f"{spec}@{_RESOLVED[spec][1]}"


def _one_line(exc: BaseException) -> str:
    """An exception's message on one line (user messages may span several)."""
    return " ".join(str(exc).split())[:300]


def _rows(batch: Mapping[str, Any]) -> int:
    """Row count of a batch (the length of ``sample_id``)."""
    return len(batch["sample_id"])


def _take(values: Any, keep: np.ndarray) -> Any:
    """Rows ``keep`` of a numpy or Arrow column."""
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return values.take(pa.array(keep))
    return np.asarray(values)[keep]


def _read_only(values: Any) -> Any:
    """A read-only view of a numpy column (the batch's arrays are views of the split's source:
    an in-place edit would change it, and under Ray they are read-only anyway)."""
    if isinstance(values, np.ndarray):
        values = values.view()
        values.flags.writeable = False
    return values


def _scatter(values: Any, keep: np.ndarray, n: int) -> Any:
    """A column of ``len(keep)`` rows placed at rows ``keep`` of ``n`` (other rows: zeros / nulls).

    The other rows are the kind's rejects, which the runner drops, so their filler never
    reaches a shard.
    """
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        src = np.full(n, -1, np.int64)
        src[keep] = np.arange(len(keep))
        return values.take(pa.array(src, mask=src < 0))
    values = np.asarray(values)
    full = np.zeros((n,) + values.shape[1:], dtype=values.dtype)
    full[keep] = values
    return full


@dataclass(frozen=True)
class MappedFn:
    """A stage function followed by the user's map: ``MappedFn(inner, spec, ...)(batch, ctx)``.

    Picklable (only the spec travels; the function is imported where it runs). The
    runner calls :meth:`apply` with the shard and row range so messages and ``ctx`` can
    name them; calling it like any stage function works too (``shard`` is then
    ``"batch"``, ``rows`` the batch's own range).
    """

    inner: StageFn
    spec: str
    options: Mapping[str, Any]
    stage: str
    split: str
    seed: int
    key: str = "prepare.map"
    digest: str | None = None  # of the module's file where the job was built
    takes_where: ClassVar[bool] = True  # the runner passes shard= and rows= (duck-typed: it never imports us)

    def __call__(self, batch: dict[str, Any], ctx: Any) -> dict[str, Any]:
        """The kind's output for ``batch`` with the user's map applied to its kept rows."""
        return self.apply(batch, ctx)[0]

    def apply(self, batch: dict[str, Any], ctx: Any, shard: str = "batch",
              rows: tuple[int, int] | None = None) -> tuple[dict[str, Any], bool]:
        """Run the kind's function, then the user's on its kept rows; returns ``(output, x_replaced)``."""
        out = dict(self.inner(batch, ctx))
        rows = rows or (0, _rows(batch))
        reasons = out.pop("reject_reason", None)
        details = out.pop("reject_detail", None)
        n = _rows(out)
        keep = np.arange(n) if reasons is None else np.flatnonzero(np.asarray(reasons, dtype=object) == "")
        kept = out if len(keep) == n else {k: _take(v, keep) for k, v in out.items()}
        ctx_user = MapContext(self.stage, self.split, self.seed, shard, (int(rows[0]), int(rows[1])),
                              MappingProxyType(dict(self.options)))
        where = f"{self.stage}/{self.split} shard {shard} rows {rows[0]}-{max(rows[1] - 1, rows[0])}"
        fn = resolve(self.spec, self.key, self.digest)
        given = {k: _read_only(v) for k, v in kept.items()}
        try:
            result = fn(dict(given), ctx_user)
        except ShardtrainError:
            raise
        except Exception as exc:  # the user's code: one line naming it and where it failed
            raise ShardtrainError(f"{self.key} {self.spec} failed on {where}: "
                                  f"{type(exc).__name__}: {_one_line(exc)}") from exc
        result = self._check(result, given, where)
        replaced = _x_replaced(given.get("x"), result.get("x"))
        if len(keep) == n:
            if reasons is not None and "reject_reason" not in result:
                result["reject_reason"] = np.asarray(reasons, dtype=object)
                if details is not None:
                    result["reject_detail"] = np.asarray(details, dtype=object)
            return result, replaced
        # Put the user's rows back among the kind's rejects, so the runner records both.
        merged = {k: _scatter(v, keep, n) for k, v in result.items() if k not in ("reject_reason", "reject_detail")}
        reason = np.asarray(reasons, dtype=object).copy()
        detail = np.full(n, "", dtype=object) if details is None else np.asarray(details, dtype=object).copy()
        if "reject_reason" in result:
            reason[keep] = np.asarray(result["reject_reason"], dtype=object)
            if "reject_detail" in result:
                detail[keep] = np.asarray(result["reject_detail"], dtype=object)
        merged["reject_reason"], merged["reject_detail"] = reason, detail
        return merged, replaced

    def describe_x(self, feature: dict[str, Any], shape: list[int], dtype: str) -> dict[str, Any]:
        """The index's ``features.x`` once this map replaced ``x``: dense, from the written output.

        The kind's own description stays under ``base``; the runner calls this (duck-typed).
        """
        return {"kind": "dense", "dtype": dtype, "shape": list(shape), "dim": int(np.prod(shape)) if shape else 1,
                "scale": 1.0, "offset": 0.0, "extractor": f"user:{self.spec}", "base": dict(feature)}

    def _check(self, result: Any, kept: dict[str, Any], where: str) -> dict[str, Any]:
        """The user's output as a dict of row-aligned columns, or one line saying what it broke."""
        head = f"{self.key} {self.spec} on {where}"
        if not isinstance(result, Mapping):
            raise ShardtrainError(f"{head}: returned {type(result).__name__}, expected a dict of columns")
        result = dict(result)
        missing = [k for k in kept if k not in result]
        if missing:
            raise ShardtrainError(f"{head}: dropped column(s) {', '.join(missing)}; keep every column it is given")
        n = _rows(kept)
        for name, values in result.items():
            if len(values) != n:
                raise ShardtrainError(f"{head}: column {name!r} has {len(values)} rows for {n}; keep every row "
                                      "(reject rows with a reject_reason column instead of dropping them)")
        if not np.array_equal(np.asarray(result["sample_id"]), np.asarray(kept["sample_id"])):
            raise ShardtrainError(f"{head}: changed sample_id; keep sample_id and the row order")
        if "x" in result and result["x"] is not kept.get("x"):
            x = np.asarray(result["x"])
            if x.dtype.kind not in "biuf" or x.ndim < 2:
                raise ShardtrainError(f"{head}: x must be a numeric array of shape (rows, ...), got dtype "
                                      f"{x.dtype} shape {x.shape}")
            result["x"] = np.ascontiguousarray(x)
        return result


def _x_replaced(before: Any, after: Any) -> bool:
    """Whether the user's map gave ``x`` new values (a new shape, dtype or content)."""
    if after is None or after is before:
        return False
    a, b = np.asarray(before), np.asarray(after)
    return a.shape != b.shape or a.dtype != b.dtype or not np.array_equal(a, b)


def wrap(fn: StageFn, spec: str, options: Mapping[str, Any], stage: str, split: str, seed: int,
         key: str | None = None) -> MappedFn:
    """``fn`` followed by the user's map ``spec`` (resolved now, so a bad spec fails here)."""
    key = key or f"{stage}.map"
    resolve(spec, key)
    return MappedFn(fn, spec, dict(options or {}), stage, split, seed, key, _RESOLVED[spec][1])


def wrap_job(job: SplitJob, spec: str | None, options: Mapping[str, Any] | None, stage: str, seed: int,
             key: str | None = None) -> SplitJob:
    """The same job with the user's map after its function (``job`` itself when ``spec`` is None).

    Predict calls it on its predict job with the run's ``prepare.map`` and
    ``prepare.map_options`` (``stage="prepare"``), so new data gets the same features.
    """
    if spec is None:
        return job
    return replace(job, fn=wrap(job.fn, spec, options or {}, stage, job.split, seed, key))
