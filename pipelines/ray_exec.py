"""Everything that touches Ray for the stages: starting/connecting, and running shard tasks.

Kept apart from the runner so that ``--executor local``, the DataModule and training
never import Ray (the GPU machines have no Ray installed).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from pipelines import _offline  # noqa: F401  (usage stats off before ray is imported)

log = logging.getLogger("shardtrain")


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Connect to a Ray cluster, or start a local one bound to 127.0.0.1 sized to this machine.

    ``address`` (or ``$RAY_ADDRESS``, set inside a Ray job) connects to an existing
    cluster; otherwise a private local Ray starts with the dashboard off, usage stats
    off and every endpoint on the loopback interface.
    """
    import ray

    if ray.is_initialized():
        return
    if address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=address or os.environ["RAY_ADDRESS"], log_to_driver=True)
        return
    # On Linux Ray swaps 127.0.0.1 for the machine's routable IP unless this switch is off;
    # with it off every endpoint of the private local Ray listens on loopback only. Set in the
    # environment (for Ray's child processes) and on the constant (ray may be imported already),
    # and only here: a driver joining a real cluster must keep its routable address.
    from ray._private import ray_constants

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    ray.init(
        address="local",
        num_cpus=num_cpus or os.cpu_count(),
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=True,
        logging_level=logging.WARNING,
    )


def _run_batch(batch: dict[str, Any], tasks: list[dict], refs: dict[str, Any], fns: dict[str, Any]) -> dict:
    """Ray Data UDF: run the shard tasks named in ``batch['task']`` and return their results."""
    import numpy as np
    import ray

    from pipelines.runner import run_shard_task

    out = []
    for task_id in batch["task"]:
        task = tasks[int(task_id)]
        source = ray.get(refs[task["split"]])
        fn, ctx = fns[task["split"]]
        out.append(json.dumps(run_shard_task(task, source, fn, ctx)))
    return {"result": np.array(out, dtype=object)}


def run_tasks_with_ray_data(tasks: list[dict], refs: dict[str, Any], fns: dict[str, Any]) -> list[dict]:
    """Run one Ray Data task per shard (batch_size=1) and collect the index entries.

    Ray Data retries a task whose node dies (its tasks default to unlimited retries
    on system failures); since a task rewrites its whole
    shard through a temporary file and a rename, a retry never leaves a partial file.
    """
    import ray

    ds = ray.data.from_items([{"task": i} for i in range(len(tasks))], override_num_blocks=len(tasks))
    ds = ds.map_batches(
        _run_batch,
        batch_size=1,
        fn_kwargs={"tasks": tasks, "refs": refs, "fns": fns},
        num_cpus=1,
    )
    return [json.loads(row["result"]) for row in ds.take_all()]
