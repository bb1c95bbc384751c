"""End to end on a private local Ray head with token auth: submit, status, logs, stop, jobs.

One head for the module (``shardtrain.cluster.local.local_head``: 127.0.0.1 only, its own temp dir
and a fresh token). Every command runs as the real CLI in a subprocess with a timeout.
The job gets the code from the shipped working dir: the head does not inherit PYTHONPATH.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from shardtrain.cluster.local import is_loopback, listening_addresses
from tests.conftest import run_cli
from tests.test_cluster_submit import run_cli_env

pytestmark = pytest.mark.cluster

AUTH_VARS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")


@pytest.fixture(scope="module")
def head():
    from shardtrain.cluster.local import local_head

    # No data root on this "cluster" (CI sets SHARDTRAIN_DATA for the client side): a job that
    # needs a dataset it was not given fails, as test_failed_run_exits_1 expects.
    with local_head(num_cpus=2, auth=True, timeout=180, env={"SHARDTRAIN_DATA": ""}) as h:
        yield h


def _env(head, home: Path, **extra: str) -> dict[str, str]:
    """A client environment: no inherited Ray auth/address, a HOME without a token file, then ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in AUTH_VARS}
    env["HOME"] = str(home)
    env.update(extra)
    return env


def cli(head, home: Path, *args: str, env: dict | None = None, timeout: int = 400):
    """``shardtrain ARGS --address <head>`` with exactly ``env`` (default: the head's token)."""
    return run_cli_env(*args, "--address", head.dashboard_url, timeout=timeout,
                       env=env if env is not None else _env(head, home, **head.client_env()))


def test_submit_waits_runs_the_demo_and_every_command_reports_it(head, tmp_path):
    """``submit`` waits by default, as ``ray job submit``; the ray-job flags reach the job's runtime env."""
    import json

    from ray.job_submission import JobSubmissionClient

    out = tmp_path / "out"
    job_id = f"shardtrain-conventions-{os.getpid()}"
    sub = cli(head, tmp_path, "submit", "--set", "train.max_epochs=2", "demo", "--out", str(out),
              "--submission-id", job_id, "--env", "SHARDTRAIN_TEST_FLAG=from-env",
              "--runtime-env-json", json.dumps({"env_vars": {"SHARDTRAIN_TEST_JSON": "from-json"}}))
    assert sub.returncode == 0, sub.stdout[-3000:] + sub.stderr[-3000:]
    assert sub.stdout.splitlines()[0].strip() == job_id
    # It streamed the run, down to its summary table, and no third-party noise came with it.
    assert "stage prepare:" in sub.stdout and "accuracy" in sub.stdout
    for noise in ("💡 Tip", "LeafSpec", "Token authentication is enabled"):
        assert noise not in sub.stdout + sub.stderr, noise
    client = JobSubmissionClient(head.dashboard_url, headers={"Authorization": f"Bearer {head.token}"})
    env = client.get_job_info(job_id).runtime_env
    assert env["env_vars"]["SHARDTRAIN_TEST_FLAG"] == "from-env"
    assert env["env_vars"]["SHARDTRAIN_TEST_JSON"] == "from-json"
    assert env["env_vars"]["RAY_USAGE_STATS_ENABLED"] == "0"
    from shardtrain.cluster.jobs import source_checkout

    # From a checkout (an editable install) shardtrain travels in py_modules; from an installed
    # wheel (as in CI) nothing is shipped and the cluster's own shardtrain runs.
    assert bool(env.get("py_modules")) == (source_checkout() is not None)
    follow = cli(head, tmp_path, "logs", "-f", job_id)  # a finished job: its logs, then its exit code
    assert follow.returncode == 0 and "accuracy" in follow.stdout

    status = cli(head, tmp_path, "status", job_id)
    assert (status.returncode, status.stdout.strip()) == (0, "SUCCEEDED")
    logs = cli(head, tmp_path, "logs", job_id)
    assert logs.returncode == 0
    assert "python -m shardtrain.cli run demo" in logs.stdout and "train.max_epochs=2" in logs.stdout
    assert "stage augment:" in logs.stdout and "test " in logs.stdout and "accuracy" in logs.stdout
    listing = cli(head, tmp_path, "list")
    assert listing.returncode == 0
    assert any(line.split()[:2] == [job_id, "SUCCEEDED"] for line in listing.stdout.splitlines())

    # The job wrote where it was told (data paths are passed as they are, never uploaded).
    for stage in ("prepare", "augment"):
        check = run_cli("inspect", str(out / "shards" / stage / "train"), "--verify", timeout=120)
        assert check.returncode == 0, check.stdout + check.stderr
    assert list((out / "runs").glob("*demo*"))


def test_failed_run_exits_1(head, tmp_path):
    env = _env(head, tmp_path, SHARDTRAIN_OFFLINE="1", **head.client_env())
    sub = cli(head, tmp_path, "submit", "fashion-mnist", "--stage", "prepare", "--executor", "local",
              "--data-dir", str(tmp_path / "no-data"), "--out", str(tmp_path / "out"), "--no-wait", env=env)
    assert sub.returncode == 0, sub.stdout[-3000:] + sub.stderr[-3000:]
    job_id = sub.stdout.strip()  # --no-wait: the id only, at once
    follow = cli(head, tmp_path, "logs", job_id, "--follow", env=env)
    assert follow.returncode == 1, follow.stdout[-3000:] + follow.stderr[-3000:]
    assert "error: dataset fashion-mnist: missing" in follow.stdout
    again = cli(head, tmp_path, "submit", "demo", "--stage", "prepare", "--submission-id", job_id, "--no-wait", env=env)
    assert again.returncode == 2, again.stderr  # an id is used once: one line that says so
    assert again.stderr.splitlines()[-1].startswith(f"error: job {job_id!r} already exists")
    status = cli(head, tmp_path, "status", job_id)
    assert (status.returncode, status.stdout.strip()) == (1, "FAILED")


def test_stop_stops_a_running_job(head, tmp_path):
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(head.dashboard_url, headers={"Authorization": f"Bearer {head.token}"})
    job_id = client.submit_job(entrypoint="python -c 'import time; time.sleep(600)'")
    deadline = time.monotonic() + 180
    while str(client.get_job_status(job_id)) != "RUNNING":
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(1)
    running = cli(head, tmp_path, "status", job_id)
    assert (running.returncode, running.stdout.strip()) == (0, "RUNNING")

    stop = cli(head, tmp_path, "stop", job_id)
    assert (stop.returncode, stop.stdout.strip()) == (0, "STOPPED"), stop.stderr
    status = cli(head, tmp_path, "status", job_id)
    assert (status.returncode, status.stdout.strip()) == (3, "STOPPED")
    listing = cli(head, tmp_path, "jobs")
    assert any(line.split()[:2] == [job_id, "STOPPED"] for line in listing.stdout.splitlines())


def test_job_imports_the_shipped_package(head, tmp_path):
    """The staged ``shardtrain/`` in py_modules is what a job imports, ahead of any install on the node."""
    from ray.job_submission import JobSubmissionClient

    from shardtrain.cluster import jobs

    staged = jobs.stage_package(tmp_path)
    (staged / "SHIPPED").write_text("marker")  # only the shipped copy has it
    code = "import pathlib, shardtrain; print('SHIPPED', (pathlib.Path(shardtrain.__file__).parent / 'SHIPPED').exists())"
    client = JobSubmissionClient(head.dashboard_url, headers={"Authorization": f"Bearer {head.token}"})
    job_id = client.submit_job(entrypoint=f'python -c "{code}"', runtime_env=jobs.build_runtime_env(None, staged))
    deadline = time.monotonic() + 180
    while str(client.get_job_status(job_id)) not in ("SUCCEEDED", "FAILED", "STOPPED"):
        assert time.monotonic() < deadline, "the job never finished"
        time.sleep(1)
    logs = client.get_job_logs(job_id)
    assert str(client.get_job_status(job_id)) == "SUCCEEDED", logs[-3000:]
    assert "SHIPPED True" in logs


def test_token_handling_and_errors_never_show_the_token(head, tmp_path):
    # No token anywhere: a one-line error that says where to put one.
    none = cli(head, tmp_path, "jobs", env=_env(head, tmp_path))
    assert none.returncode == 2 and "no token was found" in none.stderr
    # A wrong token: rejected, and not echoed.
    wrong = "wrong-token-0123456789abcdef"
    bad = cli(head, tmp_path, "jobs", env=_env(head, tmp_path, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=wrong))
    assert bad.returncode == 2 and "rejected" in bad.stderr
    assert wrong not in bad.stdout + bad.stderr and head.token not in bad.stdout + bad.stderr
    # The right token from a file named by RAY_AUTH_TOKEN_PATH, mode unset: sent after the 401.
    token_file = tmp_path / "token"
    token_file.write_text(head.token)
    ok = cli(head, tmp_path, "jobs", env=_env(head, tmp_path, RAY_AUTH_TOKEN_PATH=str(token_file)))
    assert ok.returncode == 0, ok.stderr
    assert head.token not in ok.stdout + ok.stderr
    # An unknown job id is a one-line error too.
    missing = cli(head, tmp_path, "status", "shardtrain-no-such-job")
    assert missing.returncode == 2 and "no such job" in missing.stderr


def test_head_listens_on_loopback_only(head):
    sockets = listening_addresses(head.processes())
    names = {name for _, _, name in sockets}
    assert "gcs_server" in names and "raylet" in names
    assert head.dashboard_port in {port for _, port, _ in sockets}
    exposed = [s for s in sockets if not is_loopback(s[0])]
    assert not exposed, f"local head endpoints beyond loopback: {exposed}"
