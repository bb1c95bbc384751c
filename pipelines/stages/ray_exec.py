"""Everything that touches Ray for the stages: starting/connecting, and running shard tasks.

Kept apart from the runner so that ``--executor local``, the DataModule and training
never import Ray (the GPU machines have no Ray installed).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Callable


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


def run_tasks_with_ray(task_fn: Callable[..., dict], tasks: list[dict], refs: dict[str, Any],
                       fns: dict[str, Any]) -> list[dict]:
    """Run one Ray task per shard and collect the index entries, with a progress bar.

    Plain tasks rather than Ray Data: on a 2-core machine Ray Data's own actors (stats,
    autoscaling coordinator, dataset manager) took ~40 s to start before the first shard,
    longer than the whole Fashion-MNIST prepare. A task whose node dies is retried
    (``max_retries``); since a task rewrites its whole shard through a temporary file and
    a rename, a retry never leaves a partial file. The source travels as an ObjectRef
    argument, so every worker maps the same object-store copy (zero-copy numpy).
    """
    import ray
    from tqdm import tqdm  # installed with pytorch-lightning

    # task_fn is the runner's run_shard_task, passed in so that this module never imports
    # the runner (the runner imports this one only when --executor ray asks for it).
    remote = ray.remote(num_cpus=1, max_retries=5)(task_fn)
    pending = [remote.remote(task, refs[task["split"]], *fns[task["split"]]) for task in tasks]
    results: list[dict] = []
    with tqdm(total=len(pending), unit="shard", desc="shards", file=sys.stderr, leave=False) as bar:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            results.extend(ray.get(done))
            bar.update(len(done))
    return results
