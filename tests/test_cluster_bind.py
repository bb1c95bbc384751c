"""Every endpoint of the local Ray that ``ensure_ray()`` starts listens on the loopback interface only.

Run in a fresh process, as the CLI would: start Ray through ``ensure_ray``, run a task
(so a worker and its gRPC server exist), give the agents a moment, then list the
listening TCP sockets of that process and all its descendants.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from shardtrain.cluster.local import is_loopback
from tests.conftest import REPO

PROBE = textwrap.dedent("""
    import json, time
    from shardtrain.stages.ray_exec import ensure_ray
    ensure_ray(num_cpus=1)
    import ray
    from shardtrain.cluster.local import listening_addresses, ray_process_tree

    @ray.remote
    def pid():
        import os
        return os.getpid()

    ray.get(pid.remote())
    deadline = time.monotonic() + 30
    names = set()
    while time.monotonic() < deadline and not {"ray::DashboardAgent", "ray::RuntimeEnvAgent"} <= names:
        time.sleep(1)  # the agents bind a little after the raylet
        names = {p.name() for p in ray_process_tree()}
    time.sleep(2)
    print("LISTEN " + json.dumps(listening_addresses(ray_process_tree())))
    ray.shutdown()
""")


def test_loopback_helper():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("::ffff:127.0.0.1")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("192.0.2.2")


@pytest.mark.ray
def test_ensure_ray_listens_on_loopback_only():
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=240)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("LISTEN ")]
    assert proc.returncode == 0 and lines, proc.stdout[-2000:] + proc.stderr[-2000:]
    sockets = json.loads(lines[-1][len("LISTEN "):])
    names = {name for _, _, name in sockets}
    assert "gcs_server" in names and "raylet" in names  # the probe saw Ray's servers at all
    exposed = [(ip, port, name) for ip, port, name in sockets if not is_loopback(ip)]
    assert not exposed, f"Ray endpoints listening beyond loopback: {exposed}"
