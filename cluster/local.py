"""Local multi-node Ray for tests: a head plus worker nodes, or a head with a job server, all on 127.0.0.1.

Two helpers, both private to the caller and bound to the loopback interface only:

* ``local_cluster(workers=2)``: ``ray.cluster_utils.Cluster`` with a head and N worker
  nodes as processes of this machine (each with a few CPUs and optional custom
  resources), so a test can kill a worker node mid-stage;
* ``local_head()``: ``ray start --head --block`` with the dashboard's job server on
  ``http://127.0.0.1:<free port>``, usage stats off, a dedicated ``--temp-dir`` and
  token authentication with a fresh token that is handed to clients through
  ``LocalHead.client_env()`` (never ``~/.ray/auth_token``). ``LocalHead.stop()`` ends
  only the processes of that head, never other Ray sessions on the machine.

On Linux, Ray turns ``--node-ip-address 127.0.0.1`` into the machine's routable
address and then binds its gRPC servers to it (or to ``0.0.0.0``/``::``);
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` makes Ray keep the loopback address, and
every server then listens on 127.0.0.1 only. ``pin_ray_to_loopback()`` sets it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from shardtrain.core.errors import ShardtrainError

LOOPBACK = "127.0.0.1"
# Read by ray._private.ray_constants at import; "0" keeps 127.0.0.1 as the node address.
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def pin_ray_to_loopback() -> None:
    """Make Ray in this process (and every process it starts) use 127.0.0.1 as the node address.

    Sets the environment variable for child processes and, when ``ray`` is already
    imported, the module constant it was read into.
    """
    os.environ.update(LOOPBACK_ENV)
    if "ray" in sys.modules:
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False


def ray_process_tree(root_pid: int | None = None) -> list[Any]:
    """``psutil.Process`` objects of ``root_pid`` (default: this process) and all its descendants."""
    import ray  # noqa: F401  # Ray vendors psutil; importing Ray puts it on sys.path
    import psutil

    try:
        root = psutil.Process(root_pid or os.getpid())
        return [root] + root.children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def listening_addresses(processes: list[Any]) -> list[tuple[str, int, str]]:
    """``(ip, port, process name)`` of every TCP socket in LISTEN state held by ``processes``."""
    import ray  # noqa: F401  # Ray vendors psutil; importing Ray puts it on sys.path
    import psutil

    by_pid = {p.pid: p for p in processes}
    out = []
    for conn in psutil.net_connections(kind="inet"):
        if conn.status == psutil.CONN_LISTEN and conn.pid in by_pid:
            try:
                name = by_pid[conn.pid].name()
            except psutil.NoSuchProcess:
                continue
            out.append((conn.laddr.ip, conn.laddr.port, name))
    return out


def is_loopback(ip: str) -> bool:
    """True for 127.0.0.0/8, ::1 and IPv4-mapped loopback (``::ffff:127.0.0.1``)."""
    import ipaddress

    addr = ipaddress.ip_address(ip.split("%")[0])
    mapped = getattr(addr, "ipv4_mapped", None)
    return (mapped or addr).is_loopback


# ---------------------------------------------------------------- ray.cluster_utils.Cluster


@contextmanager
def local_cluster(workers: int = 1, *, head_cpus: int = 1, worker_cpus: int = 1,
                  worker_resources: dict[str, float] | None = None,
                  object_store_mb: int = 100, timeout: float = 60.0) -> Iterator[Any]:
    """A ``ray.cluster_utils.Cluster``: a head and ``workers`` worker nodes on 127.0.0.1.

    Worker nodes get ``worker_resources`` (custom resources, e.g. ``{"shard_node": 1}``)
    so a test can pin tasks to them and kill one with
    ``cluster.remove_node(node, allow_graceful=False)``. Ray's files go to a private
    temporary directory. The driver is not connected: call
    ``ray.init(address=cluster.address)``; the cluster and the connection end on exit.
    """
    pin_ray_to_loopback()
    import ray
    from ray.cluster_utils import Cluster

    tmp = Path(tempfile.mkdtemp(prefix="stc-", dir="/tmp"))  # short: socket paths are limited to 107 bytes
    (tmp / "ray").mkdir()
    old_tmpdir = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = str(tmp)  # Cluster writes ray_current_cluster to $RAY_TMPDIR/ray, not /tmp/ray
    common = {"node_ip_address": LOOPBACK, "object_store_memory": object_store_mb << 20,
              "temp_dir": str(tmp / "ray")}
    cluster = None
    try:
        # Notice a killed node within ~3 s (Ray's default is about 15 s).
        fast_failure = {"health_check_period_ms": 1000, "health_check_timeout_ms": 1000,
                        "health_check_failure_threshold": 3}
        cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": head_cpus, "include_dashboard": False, "_system_config": fast_failure, **common})
        for _ in range(workers):
            cluster.add_node(num_cpus=worker_cpus, resources=dict(worker_resources or {}), **common)
        cluster.wait_for_nodes(timeout=timeout)
        yield cluster
    finally:
        if ray.is_initialized():
            ray.shutdown()
        if cluster is not None:
            cluster.shutdown()
        if old_tmpdir is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = old_tmpdir
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- a head with the job server


@dataclass
class LocalHead:
    """A ``ray start --head --block`` process with its job server on 127.0.0.1.

    ``dashboard_url`` is what ``shardtrain submit --address`` takes; ``client_env()``
    the environment a client needs (the token, when auth is on); ``stop()`` ends this
    head's processes only.
    """

    proc: subprocess.Popen
    temp_dir: Path
    gcs_port: int
    dashboard_port: int
    token: str | None
    log_path: Path

    @property
    def dashboard_url(self) -> str:
        """The job server's URL (``http://127.0.0.1:<port>``)."""
        return f"http://{LOOPBACK}:{self.dashboard_port}"

    @property
    def gcs_address(self) -> str:
        """The address ``ray.init(address=...)`` connects a driver to."""
        return f"{LOOPBACK}:{self.gcs_port}"

    def client_env(self) -> dict[str, str]:
        """Environment for a client of this head: its token, or auth disabled."""
        if self.token is None:
            return {"RAY_AUTH_MODE": "disabled"}
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token}

    def processes(self) -> list[Any]:
        """The head's processes: the ``ray start`` process and its descendants."""
        return ray_process_tree(self.proc.pid)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM this head's processes (what ``ray stop`` does, but only ours), SIGKILL what remains."""
        import ray  # noqa: F401  # Ray vendors psutil; importing Ray puts it on sys.path
        import psutil

        procs = self.processes()
        for p in procs:
            _signal(p, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(_running(p) for p in procs[1:]):
            time.sleep(0.2)
        # `ray start --block` may outlive its children without reaping them: kill it.
        for p in procs[1:] + procs[:1]:
            if _running(p):
                _signal(p, signal.SIGKILL)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        psutil.wait_procs(procs[1:], timeout=2)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _running(proc: Any) -> bool:
    """True while a process exists and is not a zombie (a zombie only waits to be reaped)."""
    import ray  # noqa: F401  # Ray vendors psutil; importing Ray puts it on sys.path
    import psutil

    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _signal(proc: Any, sig: int) -> None:
    """Send ``sig`` to one process by pid, ignoring one that is already gone."""
    import ray  # noqa: F401  # Ray vendors psutil; importing Ray puts it on sys.path
    import psutil

    try:
        proc.send_signal(sig)
    except psutil.NoSuchProcess:
        pass


def _head_env(token: str | None, extra: dict[str, str] | None) -> dict[str, str]:
    """The head's environment: loopback, no usage stats, its own metric ports and auth mode."""
    env = dict(os.environ)
    # PYTHONPATH too: a job on this head must get the code from its runtime env, like on a cluster.
    for var in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "PYTHONPATH"):
        env.pop(var, None)
    # A job's entrypoint says `python`: make that the interpreter running this Ray.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(LOOPBACK_ENV)
    env.update({
        "RAY_USAGE_STATS_ENABLED": "0",
        # Fixed defaults (44217/44227) would clash with other Ray instances on this machine.
        "AUTOSCALER_METRIC_PORT": str(free_port()),
        "DASHBOARD_METRIC_PORT": str(free_port()),
    })
    env.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token} if token else {"RAY_AUTH_MODE": "disabled"})
    env.update(extra or {})
    return env


def _wait_for_job_server(head: LocalHead, deadline: float) -> None:
    """Poll ``/api/version`` until the job server answers (any HTTP status counts)."""
    while time.monotonic() < deadline:
        if head.proc.poll() is not None:
            raise ShardtrainError(f"ray start exited with {head.proc.returncode}; see {head.log_path}")
        try:
            with urllib.request.urlopen(f"{head.dashboard_url}/api/version", timeout=2):
                return
        except urllib.error.HTTPError:
            return  # 401 with auth on: the server is up
        except OSError:
            time.sleep(0.5)
    head.stop()
    raise ShardtrainError(f"local Ray head: job server not up at {head.dashboard_url} in time; see {head.log_path}")


def start_local_head(*, num_cpus: int = 1, auth: bool = True, timeout: float = 90.0,
                     env: dict[str, str] | None = None) -> LocalHead:
    """Start a private Ray head with the job server on 127.0.0.1 and wait until it answers.

    Every port is picked free on 127.0.0.1; ``--temp-dir`` is a fresh directory so the
    head shares nothing with other Ray sessions. With ``auth`` the head requires a new
    random token (``RAY_AUTH_MODE=token`` + ``RAY_AUTH_TOKEN``).
    """
    temp_dir = Path(tempfile.mkdtemp(prefix="sth-", dir="/tmp"))
    token = secrets.token_hex(32) if auth else None
    gcs_port, dash_port = free_port(), free_port()
    ports = {"--port": gcs_port, "--dashboard-port": dash_port, "--ray-client-server-port": free_port(),
             "--dashboard-agent-listen-port": free_port(), "--dashboard-agent-grpc-port": free_port(),
             "--runtime-env-agent-port": free_port(), "--metrics-export-port": free_port()}
    ray_bin = Path(sys.executable).with_name("ray")
    cmd = [str(ray_bin if ray_bin.exists() else "ray"), "start", "--head", "--block",
           "--node-ip-address", LOOPBACK, "--dashboard-host", LOOPBACK, "--include-dashboard", "true",
           "--num-cpus", str(num_cpus), "--num-gpus", "0", "--object-store-memory", str(100 << 20),
           "--temp-dir", str(temp_dir), "--disable-usage-stats"]
    for flag, port in ports.items():
        cmd += [flag, str(port)]
    log_path = temp_dir / "ray-start.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=_head_env(token, env), cwd=temp_dir, start_new_session=True)
    head = LocalHead(proc, temp_dir, gcs_port, dash_port, token, log_path)
    _wait_for_job_server(head, time.monotonic() + timeout)
    return head


@contextmanager
def local_head(**kwargs: Any) -> Iterator[LocalHead]:
    """``start_local_head(**kwargs)`` as a context manager that always stops the head."""
    head = start_local_head(**kwargs)
    try:
        yield head
    finally:
        head.stop()
