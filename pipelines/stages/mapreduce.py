"""Map and map-reduce phases of a data stage, on Ray tasks or in process, with the same results.

A stage whose driver must not hold the data runs its passes over the input here:

- :func:`map_tasks` runs ``fn(item, *args)`` for every item (an input block, a file) and
  returns the results in item order: small summaries (counts, statistics, vocabularies)
  that the driver merges, in that fixed order, so the merge is the same on every executor.
- :func:`map_reduce` is a shuffle: each map task splits its output into ``partitions``
  parts (by a key's hash, say); reduce task ``j`` gets part ``j`` of every map task, in
  map order, and returns ``(summary, data)``. The driver gets only the summaries; the
  data stays where it was made (Ray's object store) and is handed to the shard tasks
  as a *part handle* that :func:`load_part` resolves inside the task.

With ``executor="local"`` everything runs in this process, one item after another, and
a handle is the data itself: Ray is never imported. With ``executor="ray"`` every call
is one Ray task (``num_cpus=1``, retried when its node dies; a lost reduce output is
rebuilt from its lineage), and the driver's endpoint and region for ``s3://`` travel
with each task (:data:`STORAGE_ENVS`, never a credential), as the shard tasks' do.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

from shardtrain.shards import storage

# Where a store is, never who may use it: copied from the driver into every task.
STORAGE_ENVS = (storage.ENDPOINT_ENV, "AWS_REGION")
MAX_RETRIES = 5


def storage_env() -> dict[str, str]:
    """The driver's store endpoint and region, for tasks on nodes whose environment lacks them."""
    return {k: os.environ[k] for k in STORAGE_ENVS if os.environ.get(k)}


def _with_env(env: dict[str, str], fn: Callable[..., Any], *args: Any) -> Any:
    """Call ``fn(*args)`` after filling in the store variables this process does not have."""
    for key, value in env.items():
        os.environ.setdefault(key, value)
    return fn(*args)


def _is_ref(handle: Any) -> bool:
    """Whether ``handle`` is a Ray ObjectRef (told by type name, so Ray is not imported to ask)."""
    return type(handle).__name__ == "ObjectRef"


def load_part(handle: Any) -> Any:
    """The data behind a part handle: ``ray.get`` of an ObjectRef, else the handle itself."""
    if _is_ref(handle):
        import ray

        return ray.get(handle)
    return handle


def _map_task(env: dict[str, str], fn: Callable[..., Any], item: Any, *args: Any) -> Any:
    """One map call inside a Ray task (module level, so Ray pickles it by reference)."""
    return _with_env(env, fn, item, *args)


def map_tasks(fn: Callable[..., Any], items: Sequence[Any], executor: str, *args: Any) -> list[Any]:
    """``[fn(item, *args) for item in items]``, as one Ray task per item with ``executor="ray"``.

    ``args`` are shared by every call (put in the object store once). Results come back
    in item order whatever order the tasks finish in. A task's exception is raised here
    (a ``ShardtrainError`` with its own one-line message).
    """
    if executor != "ray":
        return [fn(item, *args) for item in items]
    import ray

    shared = [ray.put(a) for a in args]
    remote = ray.remote(num_cpus=1, max_retries=MAX_RETRIES)(_map_task)
    env = storage_env()
    return _get(ray, [remote.remote(env, fn, item, *shared) for item in items])


def _get(ray: Any, refs: list[Any]) -> list[Any]:
    """``ray.get`` with a task's own ShardtrainError as the error (not Ray's wrapper)."""
    from shardtrain.core.errors import ShardtrainError

    try:
        return ray.get(refs)
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, ShardtrainError):
            raise ShardtrainError(str(exc.cause)) from None
        raise


def _shuffle_map(env: dict[str, str], fn: Callable[..., Any], partitions: int, item: Any, *args: Any) -> tuple:
    """A map task of a shuffle: its summary, then its ``partitions`` parts as separate returns."""
    summary, parts = _with_env(env, fn, item, *args)
    if len(parts) != partitions:
        raise ValueError(f"map function returned {len(parts)} parts, expected {partitions}")  # internal
    return (summary, *parts)


def _shuffle_reduce(env: dict[str, str], fn: Callable[..., Any], j: int, shared: Any, n_args: int,
                    *rest: Any) -> tuple[Any, Any]:
    """A reduce task: ``rest`` is the shared args then part ``j`` of every map task (Ray resolved them)."""
    args, parts = rest[:n_args], list(rest[n_args:])
    return _with_env(env, fn, j, parts, shared, *args)


def map_reduce(
    map_fn: Callable[..., tuple[Any, list[Any]]],
    items: Sequence[Any],
    reduce_fn: Callable[..., tuple[Any, Any]],
    partitions: int,
    executor: str,
    *args: Any,
    between: Callable[[list[Any]], Any] | None = None,
) -> tuple[list[Any], list[Any], list[Any]]:
    """A two-phase shuffle; returns ``(map_summaries, reduce_summaries, part_handles)``.

    ``map_fn(item, *args) -> (summary, [part_0, ..., part_{P-1}])``;
    ``between(map_summaries)`` (optional) computes, on the driver, a small value every
    reduce needs (a global maximum, say); ``reduce_fn(j, parts_j, shared, *args) ->
    (summary, data)`` with ``parts_j`` in map order. Handles are the reduce outputs'
    ObjectRefs on Ray (the driver never fetches them) and the data itself locally; a
    shard task reads one with :func:`load_part`.
    """
    if partitions < 1:
        raise ValueError(f"partitions must be >= 1, got {partitions}")  # internal
    if executor != "ray":
        mapped = [map_fn(item, *args) for item in items]
        map_summaries = [m[0] for m in mapped]
        shared = between(map_summaries) if between else None
        reduced = [reduce_fn(j, [m[1][j] for m in mapped], shared, *args) for j in range(partitions)]
        return map_summaries, [r[0] for r in reduced], [r[1] for r in reduced]
    import ray

    env = storage_env()
    put = [ray.put(a) for a in args]
    mapper = ray.remote(num_cpus=1, max_retries=MAX_RETRIES)(_shuffle_map).options(num_returns=partitions + 1)
    outs = [mapper.remote(env, map_fn, partitions, item, *put) for item in items]
    map_summaries = _get(ray, [o[0] for o in outs])
    shared = between(map_summaries) if between else None
    reducer = ray.remote(num_cpus=1, max_retries=MAX_RETRIES)(_shuffle_reduce).options(num_returns=2)
    reduced = [reducer.remote(env, reduce_fn, j, shared, len(put), *put, *[o[1 + j] for o in outs])
               for j in range(partitions)]
    reduce_summaries = _get(ray, [r[0] for r in reduced])
    return map_summaries, reduce_summaries, [r[1] for r in reduced]
