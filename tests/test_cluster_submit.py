"""The job client without a cluster: address and token lookup, masking, entrypoint, runtime env, errors."""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from shardtrain.cluster import jobs
from shardtrain.cluster.local import free_port
from shardtrain.cli import build_parser
from shardtrain.core.errors import ShardtrainError
from tests.conftest import REPO

AUTH_VARS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No Ray address/auth variables, and a HOME without ~/.ray/auth_token."""
    for var in AUTH_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return monkeypatch


def run_cli_env(*args: str, env: dict[str, str], timeout: int = 120) -> subprocess.CompletedProcess:
    """``python -m shardtrain.cli ARGS`` with exactly ``env`` (plus PYTHONPATH): unlike conftest's
    ``run_cli`` nothing of this process's environment leaks in (a session Ray sets RAY_AUTH_MODE)."""
    env = dict(env, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "shardtrain.cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _submit_args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["submit", *argv])


def test_address_precedence(clean_env):
    assert jobs.resolve_address(None) == "http://127.0.0.1:8265"
    clean_env.setenv("RAY_ADDRESS", "10.0.0.5:8265")
    assert jobs.resolve_address(None) == "http://10.0.0.5:8265"
    clean_env.setenv("RAY_API_SERVER_ADDRESS", "https://ray.example.com/")
    assert jobs.resolve_address(None) == "https://ray.example.com"
    assert jobs.resolve_address("http://127.0.0.1:9999") == "http://127.0.0.1:9999"


def test_token_sources_follow_rays_order_and_are_masked(clean_env, tmp_path):
    assert jobs.find_token() is None
    home_token = Path.home() / ".ray" / "auth_token"
    home_token.parent.mkdir(parents=True)
    home_token.write_text("home-token-0123456789\n")
    assert jobs.find_token() == ("home-token-0123456789", "~/.ray/auth_token")
    path_token = tmp_path / "tok"
    path_token.write_text("path-token-abcdef")
    clean_env.setenv("RAY_AUTH_TOKEN_PATH", str(path_token))
    token, where = jobs.find_token()
    assert token == "path-token-abcdef" and "RAY_AUTH_TOKEN_PATH" in where and token not in where
    clean_env.setenv("RAY_AUTH_TOKEN", "env-token-secret-xyz")
    assert jobs.find_token() == ("env-token-secret-xyz", "$RAY_AUTH_TOKEN")
    masked = jobs.mask("failed: Authorization: Bearer env-token-secret-xyz\nnext line env-token-secret-xyz")
    assert "env-token-secret-xyz" not in masked and "\n" not in masked and "****" in masked


def test_mode_token_without_any_token_fails_before_connecting(clean_env):
    clean_env.setenv("RAY_AUTH_MODE", "token")
    with pytest.raises(ShardtrainError, match="RAY_AUTH_MODE=token but .*RAY_AUTH_TOKEN"):
        jobs.connect(f"http://127.0.0.1:{free_port()}")


def test_entrypoint_quotes_every_argument():
    args = _submit_args("demo", "--stage", "prepare", "--executor", "local", "--out", "/shared/my out",
                        "--data-dir", "/data/it's here", "--set", "model.hidden=[64, 32]", "train.lr=0.01",
                        "--set", "name=a b", "--force")
    entry = jobs.build_entrypoint(args, "demo")
    assert shlex.split(entry) == [
        "python", "-m", "shardtrain.cli", "run", "demo", "--stage", "prepare", "--executor", "local",
        "--out", "/shared/my out", "--data-dir", "/data/it's here",
        "--set", "model.hidden=[64, 32]", "--set", "train.lr=0.01", "--set", "name=a b", "--force"]
    # The job's own parser reads it back to the same values.
    parsed = build_parser().parse_args(shlex.split(entry)[3:])
    assert parsed.data_dir == "/data/it's here" and parsed.out == "/shared/my out"
    assert parsed.overrides == ["model.hidden=[64, 32]", "train.lr=0.01", "name=a b"]
    # --debug (before or after the subcommand) travels to the job.
    assert shlex.split(jobs.build_entrypoint(build_parser().parse_args(["--debug", "submit", "demo"]), "demo"))[-1] \
        == "--debug"


def test_runtime_env_merge_keeps_ours_and_adds_the_users(tmp_path):
    base = jobs.build_runtime_env(REPO, tmp_path / "shardtrain")
    user = {"env_vars": {"A": "1", "RAY_USAGE_STATS_ENABLED": "1"}, "pip": ["rich"], "py_modules": ["s3://b/m.zip"],
            "excludes": ["data/"], "working_dir": "ignored-here"}
    merged = jobs.merge_runtime_env(base, user, {"A": "2", "MY_API_TOKEN": "tok-secret-123"})
    assert merged["working_dir"] == str(REPO)  # cmd_submit decides what travels
    assert merged["py_modules"] == [str(tmp_path / "shardtrain"), "s3://b/m.zip"]  # shardtrain stays first
    assert merged["excludes"][:len(base["excludes"])] == base["excludes"] and merged["excludes"][-1] == "data/"
    assert merged["pip"] == ["rich"]
    assert merged["env_vars"] == {"RAY_USAGE_STATS_ENABLED": "1", "NO_ALBUMENTATIONS_UPDATE": "1", "A": "2",
                                  "MY_API_TOKEN": "tok-secret-123"}
    assert base["env_vars"]["RAY_USAGE_STATS_ENABLED"] == "0"  # base untouched
    assert "tok-secret-123" not in jobs.mask("boom: MY_API_TOKEN=tok-secret-123")  # credential-like names masked


def test_runtime_env_files_and_json(tmp_path):
    f = tmp_path / "env.yaml"
    f.write_text("env_vars:\n  A: '1'\npip: [rich]\n")
    assert jobs._read_runtime_env(str(f), None) == {"env_vars": {"A": "1"}, "pip": ["rich"]}
    assert jobs._read_runtime_env(None, '{"pip": ["x"]}') == {"pip": ["x"]}
    assert jobs._read_runtime_env(None, None) == {}
    for file, inline, message in ((str(tmp_path / "nope.yaml"), None, "no such file"),
                                  (None, "{bad", "not JSON"), (None, "[1]", "must be a mapping"),
                                  (None, '{"env_vars": [1]}', "env_vars must be a mapping")):
        with pytest.raises(ShardtrainError, match=message):
            jobs._read_runtime_env(file, inline)


class _FakeClient:
    """Records ``submit_job``: ``cmd_submit`` end to end without a cluster."""

    def __init__(self):
        self.submitted = {}

    def submit_job(self, **kwargs):
        self.submitted = kwargs
        return kwargs["submission_id"]


def test_submit_merges_the_users_runtime_env_and_never_prints_values(tmp_path, monkeypatch, capsys, caplog):
    import json
    import logging

    fake = _FakeClient()
    monkeypatch.setattr(jobs, "connect", lambda address: (fake, "http://fake:8265"))
    monkeypatch.setattr(jobs, "stage_package", lambda dest: Path(dest) / "shardtrain")
    env_json = json.dumps({"env_vars": {"FROM_JSON": "j", "WANDB_API_KEY": "k-0123456789"}, "pip": ["rich"]})
    args = _submit_args("--set", "train.max_epochs=2", "demo", "--out", "/shared/out", "--no-wait",
                        "--runtime-env-json", env_json, "--env", "FROM_FLAG=f", "--env", "FROM_JSON=flag-wins",
                        "--submission-id", "my-run-1")
    with caplog.at_level(logging.INFO, logger="shardtrain"):
        assert jobs.cmd_submit(args) == 0
    sent = fake.submitted
    assert sent["submission_id"] == "my-run-1" and capsys.readouterr().out.strip() == "my-run-1"
    env = sent["runtime_env"]
    assert env["env_vars"]["FROM_JSON"] == "flag-wins" and env["env_vars"]["FROM_FLAG"] == "f"
    assert env["env_vars"]["RAY_USAGE_STATS_ENABLED"] == "0" and env["pip"] == ["rich"]
    assert env["env_vars"]["SHARDTRAIN_QUIET_DEPS"] == "1"  # the job's workers drop third-party noise too
    if jobs.source_checkout() is not None:
        assert env["working_dir"] == str(REPO) and env["py_modules"][0].endswith("shardtrain")
    assert "--set train.max_epochs=2" in sent["entrypoint"]
    said = caplog.text
    assert "my-run-1" in said and "env WANDB_API_KEY" not in said and "k-0123456789" not in said
    assert "FROM_FLAG" in said and "=f" not in said  # names only
    # A working_dir in the runtime env acts as --working-dir; both at once is an error.
    wd = tmp_path / "wd"
    wd.mkdir()
    args = _submit_args("demo", "--no-wait", "--runtime-env-json", json.dumps({"working_dir": str(wd)}))
    jobs.cmd_submit(args)
    assert fake.submitted["runtime_env"]["working_dir"] == str(wd)
    args = _submit_args("demo", "--no-wait", "--runtime-env-json", '{"working_dir": "s3://bucket/code.zip"}')
    jobs.cmd_submit(args)
    assert fake.submitted["runtime_env"]["working_dir"] == "s3://bucket/code.zip"
    assert "excludes" not in fake.submitted["runtime_env"]
    with pytest.raises(ShardtrainError, match="give one of them"):
        jobs.cmd_submit(_submit_args("demo", "--working-dir", str(wd), "--runtime-env-json",
                                     json.dumps({"working_dir": str(wd)})))


def test_driver_asks_for_gpus_only_when_lightning_trains_on_gpus_in_it():
    from shardtrain.config import load_config

    gpu = load_config("demo", ["train.accelerator=gpu", "train.devices=2"])
    assert jobs.entrypoint_gpus(gpu, "all") == 2
    assert jobs.entrypoint_gpus(gpu, "prepare") == 0
    assert jobs.entrypoint_gpus(load_config("demo", ["train.accelerator=gpu", "train.launcher=ray"]), "all") == 0
    assert jobs.entrypoint_gpus(load_config("demo"), "train") == 0  # the demo trains on CPU


def test_runtime_env_ships_the_checkout_without_data_or_outputs():
    import shardtrain

    # An editable install (or a source tree) runs from REPO/pipelines; a wheel from site-packages.
    from_checkout = Path(shardtrain.__file__).resolve().parent == REPO / "pipelines"
    assert jobs.source_checkout() == (REPO if from_checkout else None)
    env = jobs.build_runtime_env(REPO)
    assert env["working_dir"] == str(REPO)
    for pattern in (".git", ".venv", "outputs", "*.arrow", "*.ckpt", "shardtrain-out"):
        assert pattern in env["excludes"]
    assert env["env_vars"]["RAY_USAGE_STATS_ENABLED"] == "0"
    installed = jobs.build_runtime_env(None)
    assert "working_dir" not in installed and "excludes" not in installed
    assert installed["env_vars"] == env["env_vars"]


def test_staged_package_has_the_wheel_layout_and_travels_in_py_modules(tmp_path):
    """``stage_package`` assembles ``shardtrain/`` (subpackages nested, data files, no caches),
    importable on its own in a fresh interpreter; ``build_runtime_env`` puts it in py_modules."""
    staged = jobs.stage_package(tmp_path)
    assert staged == tmp_path / "shardtrain"
    for rel in ("__init__.py", "cli.py", "core/errors.py", "models/mlp.py", "augment/text.py", "cluster/jobs.py",
                "presets/demo.yaml", "shards/FORMAT.md", "cluster/runtime_env.yaml"):
        assert (staged / rel).is_file(), rel
    assert not list(staged.rglob("__pycache__")) and not list(staged.rglob("*.pyc"))
    code = "import shardtrain, shardtrain.models, shardtrain.cluster.jobs as j; print(shardtrain.__file__, j.__file__)"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # PYTHONPATH comes before site-packages and the editable finder: the staged copy answers.
    probe = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={**env, "PYTHONPATH": str(tmp_path)},
                           capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.split() == [str(staged / "__init__.py"), str(staged / "cluster" / "jobs.py")]
    with pytest.raises(ShardtrainError, match="already exists"):
        jobs.stage_package(tmp_path)
    env = jobs.build_runtime_env(REPO, staged)
    assert env["py_modules"] == [str(staged)] and env["working_dir"] == str(REPO)
    assert "py_modules" not in jobs.build_runtime_env(None)


def test_ray_packaging_honours_the_excludes(tmp_path):
    """Ray's own zip of a working dir drops the shards, checkpoints and .git we exclude."""
    import zipfile

    from ray._private.runtime_env.packaging import create_package

    src = tmp_path / "src"
    for rel in ("pipelines/cli.py", "outputs/run/metrics.json", "shards/part-00000-of-00001.arrow",
                "runs/last.ckpt", ".git/HEAD", "README.md"):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text("x")
    zipped = tmp_path / "pkg.zip"
    create_package(str(src), zipped, include_gitignore=True, excludes=jobs.build_runtime_env(src)["excludes"])
    names = {n.rstrip("/") for n in zipfile.ZipFile(zipped).namelist()}
    assert "pipelines/cli.py" in names and "README.md" in names
    assert not any(n.endswith((".arrow", ".ckpt")) or n.startswith((".git", "outputs")) for n in names)


def test_config_files_must_travel_with_the_working_dir(tmp_path):
    assert jobs._config_arg("demo", REPO) == "demo"
    preset = REPO / "pipelines" / "presets" / "demo.yaml"
    assert jobs._config_arg(str(preset), REPO) == "pipelines/presets/demo.yaml"
    outside = tmp_path / "mine.yaml"
    outside.write_text("name: mine\n")
    with pytest.raises(ShardtrainError, match="outside the directory shipped"):
        jobs._config_arg(str(outside), REPO)
    assert jobs._config_arg(str(outside), None) == str(outside.resolve())


def test_cli_errors_are_one_line_and_exit_2(tmp_path):
    # In a fresh process: Ray caches the auth mode and token per process.
    env = {k: v for k, v in os.environ.items() if k not in AUTH_VARS}
    env["HOME"] = str(tmp_path)
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    down = run_cli_env("jobs", "--address", url, env=env)
    err = down.stderr.strip()
    assert down.returncode == 2 and err.startswith("error: cannot reach the Ray job server at " + url)
    assert "\n" not in err
    # A bad config fails here, before anything is sent.
    down = run_cli_env("list", "--address", url, env=env)  # the ray-job name of `jobs`
    assert down.returncode == 2 and down.stderr.startswith("error: cannot reach")
    bad = run_cli_env("submit", "demo", "--set", "model.nope=1", "--address", url, env=env)
    assert bad.returncode == 2 and "model.nope" in bad.stderr
    nodir = run_cli_env("submit", "demo", "--working-dir", str(tmp_path / "missing"), "--address", url, env=env)
    assert nodir.returncode == 2 and "not a directory" in nodir.stderr
