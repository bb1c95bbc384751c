"""``shardtrain predict``: a finished run's model over new data, written as one Parquet file.

Reads top to bottom: find the run (it must be complete), load its config and the prepare
state fitted on its training split, build the network as ``--stage evaluate`` does
(without the Lightning shell) with the checkpoint it evaluated, featurise the input (a
shard split directory is read as it is; anything else goes through the dataset kind's
``predict_job``, batch by batch in this process, rejects kept beside the output), predict
in batches without a Trainer and write ``sample_id``, predictions, probabilities (and the
true labels when the input has them) atomically. The probabilities are the ones
evaluate's metrics see (``model.eval_outputs``), so predicting a run's own test shards
reproduces its ``metrics.json`` test metrics.

Output columns (``<p>`` is ``""`` for one task, ``"<task>."`` per task of a multitask model):

- ``sample_id`` (int64);
- ``<p>pred``: the class name (string), or the regression value (float32);
- ``<p>prob_<class>`` (float32), one per class, summing to 1 (class names kept as they are,
  only whitespace/control characters replaced and duplicates numbered);
- bagging: ``members``, a fixed-size ``list<list<float32>>`` per row (member x class; for
  regression ``list<float32>``, one value per member); ``pred``/``prob_*`` are the ensemble mean;
- when the input has labels: ``label`` (``label_<task>`` for multitask), the true class name
  (null where unknown) or the regression target.

The Parquet schema metadata (key ``shardtrain``) is JSON: run dir, checkpoint, dataset
kind, input, and the class names per task.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from shardtrain.config import Config, from_dict, replace
from shardtrain.core.errors import ShardtrainError
from shardtrain.shards import format as fmt
from shardtrain.shards.reader import index_path, read_index
from shardtrain.training.defaults import PREPARE_INDEX, label_columns
from shardtrain.training.stage import find_run_dir

REJECTS_SUFFIX = ".rejects.jsonl"
METADATA_KEY = b"shardtrain"
FEATURE_KEYS = ("kind", "shape", "dim", "dtype")  # what must agree between the input and the run's features


@dataclass
class PredictResult:
    """What :func:`predict` wrote: the Parquet ``path``, its ``rows``, the ``rejects`` count and ``metrics``.

    ``metrics`` is empty when the input had no labels; otherwise shaped like ``metrics.json``:
    ``{"samples", "accuracy"}`` (regression: ``"rmse"``) for one task, ``{task: {...}}`` for
    several. ``rejects_path`` is the rejects file (None when nothing was rejected).
    """

    path: Path
    rows: int
    rejects: int
    metrics: dict[str, Any] = field(default_factory=dict)
    rejects_path: Path | None = None


# ------------------------------------------------------------------------------ the run
def resolve_run(run: str | Path, out_dir: str | Path = "shardtrain-out") -> Path:
    """The run directory ``run`` names (a directory, or a run name under ``out_dir/runs``); it must be complete."""
    from shardtrain.training.rundirs import open_run

    # A run in an object store (an s3:// run dir, or a name under an s3:// out_dir) is
    # pulled into its local staging copy first.
    return open_run(find_run_dir(str(out_dir) if "://" in str(out_dir) else Path(out_dir), run))


def load_fitted(run_dir: Path) -> dict[str, Any]:
    """The prepare index of the run's training split: ``run_dir/prepare_index.json``, else the output root's."""
    own = run_dir / PREPARE_INDEX
    if own.is_file():
        try:
            return json.loads(own.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ShardtrainError(f"{own}: unreadable prepare index ({exc})") from None
    shared = run_dir.parent.parent / "shards" / "prepare" / "train"
    if not index_path(shared).exists():
        raise ShardtrainError(f"{run_dir}: no {PREPARE_INDEX} and no training shards at {shared} "
                              "(the prepare state the run was trained on is needed to featurise new data)")
    return read_index(shared)


def pick_checkpoint(run_dir: Path) -> Path:
    """The checkpoint the run was evaluated with (``run.json``), else ``best.ckpt``, else ``last.ckpt``."""
    info = run_dir / "run.json"
    if info.is_file():
        try:
            named = json.loads(info.read_text(encoding="utf-8")).get("checkpoint")
        except (OSError, json.JSONDecodeError):
            named = None
        if named:
            path = Path(named)
            # A moved run dir: the same file name in this run's checkpoints folder.
            for candidate in (path, run_dir / "checkpoints" / path.name):
                if candidate.is_file():
                    return candidate
    for name in ("best.ckpt", "last.ckpt"):
        if (run_dir / "checkpoints" / name).is_file():
            return run_dir / "checkpoints" / name
    raise ShardtrainError(f"{run_dir / 'checkpoints'}: no best.ckpt or last.ckpt to predict with")


def load_model(cfg: Config, fitted: dict[str, Any], ckpt: Path, device: Any) -> tuple[Any, dict[str, Any]]:
    """The run's network built from the fitted index (as evaluate's ``build_module``), weights loaded, in eval mode.

    The plain ``nn.Module`` only (``shardtrain.models``), not the Lightning shell, so
    predicting never imports Lightning. Returns ``(model, {task: class names | None})``.
    """
    import torch

    from shardtrain.models.build import build_model, task_specs

    labels = label_columns(fitted)
    if not labels:
        raise ShardtrainError(f"{fitted.get('split')} shards the run was trained on have no label column")
    model = build_model(cfg.model, fitted.get("features", {}).get("x", {}), labels, loss=cfg.train.loss)
    state = torch.load(str(ckpt), map_location="cpu", weights_only=False).get("state_dict")
    if state is None:
        raise ShardtrainError(f"{ckpt}: not a Lightning checkpoint (no state_dict)")
    # The shell holds the network as ``model``; its metric states are not weights.
    weights = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    mine = model.state_dict()
    for key, tensor in weights.items():
        if key in mine and tuple(mine[key].shape) != tuple(tensor.shape):
            raise ShardtrainError(f"{ckpt}: {key} has shape {tuple(tensor.shape)} but the model built from the run's "
                                  f"prepare index needs {tuple(mine[key].shape)}")
    model.load_state_dict(weights)
    names = {t: None if d.get("classes") is None else [str(c) for c in d["classes"]]
             for t, d in zip(task_specs(labels), labels.values())}
    return model.to(device).eval(), names


def _device(cfg: Config) -> Any:
    """CUDA when the run trained on a GPU and one is here, else the CPU."""
    import torch

    wants_gpu = cfg.train.accelerator in ("gpu", "cuda", "auto")
    return torch.device("cuda" if wants_gpu and torch.cuda.is_available() else "cpu")


# ------------------------------------------------------------------------------ the input
def is_shard_dir(path: Path) -> bool:
    """Whether ``path`` is a shard split directory (it holds an index)."""
    return path.is_dir() and index_path(path).exists()


def check_input_shards(directory: Path, index: dict[str, Any], fitted: dict[str, Any]) -> None:
    """Refuse shards whose features or class vocabularies differ from what the run was trained on."""
    mine = {k: fitted.get("features", {}).get("x", {}).get(k) for k in FEATURE_KEYS}
    theirs = {k: index.get("features", {}).get("x", {}).get(k) for k in FEATURE_KEYS}
    if mine != theirs:
        raise ShardtrainError(f"{directory}: features {theirs} do not match the run's {mine}")
    for column, desc in index.get("labels", {}).items():
        trained = fitted.get("labels", {}).get(column)
        if trained is None:
            continue  # a label column the run has no task for: ignored
        if desc.get("classes") != trained.get("classes"):
            raise ShardtrainError(f"{directory}: column {column} has classes {desc.get('classes')}, the run was "
                                  f"trained on {trained.get('classes')}")


def featurise(cfg: Config, fitted: dict[str, Any], path: str | Path, work: Path) -> tuple[Path, list[dict], int]:
    """New raw data at ``path`` -> one shard split under ``work`` via the kind's ``predict_job``.

    Returns the split directory, the reject records and the input record count. The job's
    batch function runs in this process (the local executor of the stage runner), the
    reject fraction is checked by the caller (so the rejects file goes beside the output).
    """
    from shardtrain.stages.runner import run_stage

    job = _with_user_map(cfg, cfg.dataset.predict_job(cfg, fitted, path))
    run_stage("predict", [job], work, rows_per_shard=cfg.prepare.rows_per_shard, batch_rows=cfg.prepare.batch_rows,
              max_reject_fraction=1.0, executor="local", fp="predict", config=cfg.model_dump(mode="json"),
              dataset=cfg.dataset.name)
    directory = work / job.split
    rejects_file = directory / fmt.REJECTS_NAME
    rejects = ([json.loads(line) for line in rejects_file.read_text(encoding="utf-8").splitlines() if line]
               if rejects_file.exists() else [])
    rows = read_index(directory)["rows"]
    input_rows = job.input_rows if job.input_rows is not None else rows + len(rejects)
    return directory, rejects, input_rows


def _with_user_map(cfg: Config, job: Any) -> Any:
    """The job with ``prepare.map`` (the user's batch function) after the kind's transform, as prepare runs it."""
    from shardtrain.stages.usermap import wrap_job

    return wrap_job(job, cfg.prepare.map, cfg.prepare.map_options, "prepare", cfg.seed)


# ------------------------------------------------------------------------------ predicting
def run_model(model: Any, directory: Path, batch_size: int, device: Any, precision: str) -> dict[str, Any]:
    """Predict every row of a shard split, in order; numpy outputs per task.

    Returns ``{"sample_id": (N,), "w": (N,), "y": {task: (N,)} (labelled inputs only),
    "probs": {task: (H, N, C) | (H, N)}}`` where head 0 is the prediction (a bagging
    ensemble's mean) and heads 1.. are its members.
    """
    import torch

    from shardtrain.data.batching import SplitData
    from shardtrain.shards import ShardSet

    split = SplitData(ShardSet(directory), None, "cpu", torch.device("cpu"), "predict")
    if split.rows == 0:
        raise ShardtrainError(f"{directory}: no rows to predict")
    tasks = dict(model.tasks)
    # Tasks whose label column the input has (``label`` for a single-task model, ``label_<task>`` otherwise).
    labelled = [t for t in tasks if label_column(t, tasks) in split.labels]
    outs: dict[str, list] = {t: [] for t in tasks}
    ys: dict[str, list] = {t: [] for t in labelled}
    autocast = "bf16" in precision or precision.startswith("16")
    with torch.inference_mode():
        for start in range(0, split.rows, batch_size):
            idx = torch.arange(start, min(start + batch_size, split.rows))
            batch = split.batch(idx, torch.zeros(len(idx), dtype=torch.bool))
            x = batch["x"].to(device)
            y = _labels_for(batch, tasks, device)
            with torch.autocast(device.type, enabled=autocast,
                                dtype=torch.bfloat16 if "bf16" in precision else torch.float16):
                outputs = model.eval_outputs({"x": x, "y": y, "w": batch["w"].to(device)})
            for t, o in outputs.items():
                outs[t].append(o.pred.float().cpu().numpy())  # (H, B, C) | (H, B)
                if t in ys:
                    ys[t].append(o.target.cpu().numpy())
    result: dict[str, Any] = {"sample_id": split.sample_id, "w": split.cols["w"].numpy(),
                              "probs": {t: np.concatenate(v, axis=1) for t, v in outs.items()}}
    if ys:
        result["y"] = {t: np.concatenate(v) for t, v in ys.items()}
    return result


def label_column(task: str, tasks: Any) -> str:
    """The shard column of a task's labels: ``label`` for a single-task model, else ``label_<task>``."""
    return "label" if list(tasks) == ["label"] else f"label_{task}"


def _labels_for(batch: dict[str, Any], tasks: dict[str, Any], device: Any) -> Any:
    """The batch's targets for every task of the model; a task without labels gets -1 (classes) or NaN."""
    import torch

    from shardtrain.models.protocol import REGRESSION

    y = batch.get("y")
    given = {} if y is None else y if isinstance(y, dict) else {next(iter(tasks)): y}
    n = len(batch["w"])
    ys = {t: given[t].to(device) if t in given else torch.full((n,), float("nan"), device=device)
          if spec == REGRESSION else torch.full((n,), -1, dtype=torch.int64, device=device)
          for t, spec in tasks.items()}
    return ys["label"] if list(ys) == ["label"] else ys


# ------------------------------------------------------------------------------ the output
def column_names(classes: list[str]) -> list[str]:
    """Readable, unique column-name parts for class names (whitespace/control characters -> ``_``)."""
    out: list[str] = []
    for name in classes:
        part = re.sub(r"[\s\x00-\x1f\x7f]+", "_", str(name)) or "_"
        base, i = part, 1
        while part in out:
            part, i = f"{base}_{i}", i + 1
        out.append(part)
    return out


def build_table(pred: dict[str, Any], class_names: dict[str, list[str] | None], label_columns: dict[str, str],
                meta: dict[str, Any]) -> Any:
    """The output Arrow table (see the module docstring for the columns)."""
    import pyarrow as pa

    cols: dict[str, Any] = {"sample_id": pa.array(np.asarray(pred["sample_id"], dtype=np.int64))}
    multi = len(class_names) > 1
    for task, names in class_names.items():
        p = f"{task}." if multi else ""
        heads = pred["probs"][task]  # (H, N, C) or (H, N)
        if names is None:
            cols[f"{p}pred"] = pa.array(heads[0].astype(np.float32))
        else:
            top = heads[0].argmax(-1)  # (N,) the first maximum, as the metrics' max(-1)
            cols[f"{p}pred"] = pa.array(np.asarray(names, dtype=object)[top].tolist(), pa.string())
            for j, part in enumerate(column_names(names)):
                cols[f"{p}prob_{part}"] = pa.array(heads[0][:, j].astype(np.float32))
        if heads.shape[0] > 1:  # an ensemble: its members' outputs, (N, K[, C])
            members = np.ascontiguousarray(np.moveaxis(heads[1:], 0, 1).astype(np.float32))
            arr = pa.array(members.reshape(-1))
            for width in reversed(members.shape[1:]):
                arr = pa.FixedSizeListArray.from_arrays(arr, width)
            cols[f"{p}members"] = arr
    for task, column in label_columns.items():
        y = pred["y"][task]
        names = class_names[task]
        if names is None:
            cols[column] = pa.array(y.astype(np.float32))
        else:
            lookup = np.asarray(names, dtype=object)
            valid = (y >= 0) & (y < len(names))
            cols[column] = pa.array([lookup[v] if ok else None for v, ok in zip(y.tolist(), valid)], pa.string())
    table = pa.table(cols)
    return table.replace_schema_metadata({METADATA_KEY: json.dumps(meta).encode()})


def score(pred: dict[str, Any], class_names: dict[str, list[str] | None]) -> dict[str, Any]:
    """Accuracy (regression: rmse) per task over labelled rows with weight > 0, as evaluate counts them."""
    if "y" not in pred:
        return {}
    out = {}
    for task, y in pred["y"].items():
        head = pred["probs"][task][0]
        if class_names[task] is None:
            ok = ~np.isnan(y) & (pred["w"] > 0)
            n = int(ok.sum())
            err = (head[ok] - y[ok]).astype(np.float64)  # float32 difference, float64 sums: as the metrics
            out[task] = {"samples": n, "rmse": float(np.sqrt(np.mean(err ** 2))) if n else None}
        else:
            ok = (y >= 0) & (pred["w"] > 0)
            n = int(ok.sum())
            hits = int((head[ok].argmax(-1) == y[ok]).sum())
            out[task] = {"samples": n, "accuracy": hits / n if n else None}
    return out[next(iter(out))] if list(class_names) == ["label"] else out


def _atomic_parquet(table: Any, path: Path) -> None:
    """Write the Parquet file under a temporary name beside ``path``, then rename it into place."""
    import pyarrow.parquet as pq

    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_rejects(path: Path, rejects: list[dict]) -> None:
    """``<out>.rejects.jsonl``: one ``{sample_id, reason, detail}`` per line (written atomically)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rejects), encoding="utf-8")
    os.replace(tmp, path)


# ------------------------------------------------------------------------------ the entry point
def predict(run: str | Path, inputs: str | Path, out: str | Path, *, out_dir: str | Path = "shardtrain-out",
            data_dir: str | None = None, overwrite: bool = False, batch_size: int = 4096) -> PredictResult:
    """Predict with a finished run over ``inputs`` and write the Parquet file ``out``; see the module docstring.

    ``run`` is a run directory or a run name under ``out_dir/runs``; ``inputs`` a shard split
    directory (read as it is; its features must be the run's) or new raw data for the run's
    dataset kind (``Dataset.predict_job``). ``out`` is refused when it exists unless
    ``overwrite``. Rejected input records go to ``<out>.rejects.jsonl``; more than the run's
    ``prepare.max_reject_fraction`` of them fails without writing ``out``. Bad input raises a
    one-line :class:`~shardtrain.core.errors.ShardtrainError`.

    Example::

        res = predict("out/runs/20260101-120000-demo", "out/shards/prepare/test", "preds.parquet")
        res.metrics["accuracy"]  # the run's metrics.json test accuracy
    """
    out, source = Path(out), Path(inputs)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ShardtrainError(f"batch_size: must be an integer >= 1, got {batch_size!r}")
    run_dir = resolve_run(run, out_dir)
    raw_uri = None  # new raw data on a store: handed to the kind's predict_job as its URI
    if "://" in str(inputs) and not str(inputs).startswith("file://"):
        # A shard split in an object store: its sha256-verified local cache copy; anything else is
        # raw data, which the kinds read through shardtrain.shards.storage.
        from shardtrain.shards import storage
        from shardtrain.shards.cache import local_split
        from shardtrain.shards.reader import index_fingerprint

        if index_fingerprint(str(inputs)) is not None:
            source = local_split(str(inputs))
        elif storage.exists(str(inputs)) or any(ch in str(inputs) for ch in "*?["):
            raw_uri = str(inputs)
        else:
            raise ShardtrainError(f"input: {storage.redact(str(inputs))}: no such object or prefix")
    if raw_uri is None and not source.exists():
        raise ShardtrainError(f"input: {source}: no such file or directory")
    if out.is_dir():
        raise ShardtrainError(f"{out}: is a directory; --out names the Parquet file to write")
    if out.exists() and not overwrite:
        raise ShardtrainError(f"{out}: exists; pass --overwrite (overwrite=True) to replace it")
    cfg = from_dict(yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")))
    if data_dir:
        cfg = replace(cfg, dataset={"data_dir": data_dir})
    fitted = load_fitted(run_dir)
    ckpt = pick_checkpoint(run_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    rejects_path = out.with_name(out.name + REJECTS_SUFFIX)
    device = _device(cfg)
    model, class_names = load_model(cfg, fitted, ckpt, device)
    rejects: list[dict] = []
    if raw_uri is None and is_shard_dir(source):
        check_input_shards(source, read_index(source), fitted)
        pred = run_model(model, source, batch_size, device, str(cfg.train.precision))
    else:
        # The featurised rows go to a shard split in a work folder beside the output (same filesystem).
        work = Path(tempfile.mkdtemp(prefix=f".{out.name}.predict-", dir=out.parent))
        try:
            # Absolute: a relative --input is relative to here, never to the kind's data_dir.
            where = raw_uri if raw_uri is not None else source.absolute()
            directory, rejects, input_rows = featurise(cfg, fitted, where, work)
            _check_rejects(cfg, rejects, input_rows, rejects_path)
            pred = run_model(model, directory, batch_size, device, str(cfg.train.precision))
        finally:
            shutil.rmtree(work, ignore_errors=True)
    label_columns = {t: label_column(t, class_names) for t in pred.get("y", {})}
    shown = source if raw_uri is None else _redacted(raw_uri)
    meta = {"run_dir": str(run_dir), "checkpoint": str(ckpt), "dataset": cfg.dataset.name, "input": str(shown),
            "classes": class_names}
    table = build_table(pred, class_names, label_columns, meta)
    _atomic_parquet(table, out)
    if rejects:
        _write_rejects(rejects_path, rejects)
    else:
        rejects_path.unlink(missing_ok=True)  # a stale one from an earlier prediction to this path
    return PredictResult(out, table.num_rows, len(rejects), score(pred, class_names),
                         rejects_path if rejects else None)


def _redacted(location: str) -> str:
    """A URI as it may be recorded (no credential)."""
    from shardtrain.shards import storage

    return storage.redact(location)


def _check_rejects(cfg: Config, rejects: list[dict], input_rows: int, rejects_path: Path) -> None:
    """Fail when more than ``prepare.max_reject_fraction`` is rejected (the rejects written beside, no output)."""
    limit = float(cfg.prepare.max_reject_fraction)
    fraction = len(rejects) / max(input_rows, 1)
    if fraction > limit:
        _write_rejects(rejects_path, rejects)
        first = rejects[0]
        raise ShardtrainError(f"predict: {len(rejects)} of {input_rows} records rejected ({fraction:.1%} > "
                              f"prepare.max_reject_fraction {limit:.1%}); first: sample {first.get('sample_id')}: "
                              f"{first.get('reason')} {first.get('detail', '')} (all in {rejects_path})".rstrip())


def summary_line(result: PredictResult) -> str:
    """The one line ``shardtrain predict`` prints: rows, rejects, the output, the accuracy when labelled."""
    line = f"predict: {result.rows} rows, {result.rejects} rejected -> {result.path}"
    if result.rejects_path is not None:
        line += f" (rejects: {result.rejects_path})"
    m = result.metrics
    if m:
        flat = {"": m} if "samples" in m else {f"{t} ": v for t, v in m.items()}
        parts = []
        for t, v in flat.items():
            for key in ("accuracy", "rmse"):
                if v.get(key) is not None:
                    parts.append(f"{t}{key} {v[key]:.4f} ({v['samples']} labelled)")
        if parts:
            line += "; " + ", ".join(parts)
    return line
