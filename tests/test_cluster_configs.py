"""The shipped cluster configs hold what shardtrain relies on: ray up, KubeRay RayJob, runtime env."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import yaml

from shardtrain.cli import build_parser
from tests.conftest import REPO

CLUSTER = REPO / "cluster"


def _load(name: str) -> dict:
    return yaml.safe_load((CLUSTER / name).read_text())


def _commands(cfg: dict, key: str) -> str:
    return "\n".join(cfg.get(key) or [])


def test_ray_up_config_matches_rays_schema():
    import jsonschema
    import ray.autoscaler

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(_load("cluster.yaml"), schema)


def test_ray_up_config_installs_shardtrain_and_keeps_the_job_server_private():
    cfg = _load("cluster.yaml")
    types = cfg["available_node_types"]
    assert cfg["head_node_type"] in types
    gpu = [t for name, t in types.items() if name != cfg["head_node_type"]]
    assert gpu and all(t["node_config"]["InstanceType"].split(".")[0] in ("g5", "g6", "p4d", "p5") for t in gpu)
    assert cfg["max_workers"] >= max(t.get("max_workers", 0) for t in gpu)
    assert "pip install" in _commands(cfg, "setup_commands") and "shardtrain" in _commands(cfg, "setup_commands")
    assert cfg["file_mounts"]["/home/ray/shardtrain"] == "."
    head = _commands(cfg, "head_start_ray_commands")
    assert "ray start --head" in head
    assert "--dashboard-host=127.0.0.1" in head  # reachable only through `ray dashboard` port-forward
    assert "--dashboard-port=8265" in head
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        commands = _commands(cfg, key)
        assert "--disable-usage-stats" in commands and "RAY_USAGE_STATS_ENABLED=0" in commands
        assert "RAY_AUTH_MODE=token" in commands
    # Every node gets the token the client reads from ~/.ray/auth_token.
    assert cfg["file_mounts"]["/home/ray/.ray/auth_token"] == "~/.ray/auth_token"
    assert "0.0.0.0" not in (CLUSTER / "cluster.yaml").read_text()


def test_rayjob_runs_the_shardtrain_cli_on_gpu_workers():
    job = _load("rayjob.yaml")
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:2] == ["shardtrain", "run"]
    args = build_parser().parse_args(argv[1:])  # the entrypoint parses with our own CLI
    assert args.config == "fashion-mnist" and args.data_dir and args.out.startswith("/shared/")
    runtime_env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])
    assert runtime_env["env_vars"]["RAY_USAGE_STATS_ENABLED"] == "0"

    spec = job["spec"]["rayClusterSpec"]
    assert spec["authOptions"]["mode"] == "token"
    head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
    (group,) = spec["workerGroupSpecs"]
    worker = group["template"]["spec"]["containers"][0]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert worker["resources"]["requests"]["nvidia.com/gpu"] == "1"
    assert head["image"] == worker["image"]
    for container in (head, worker):
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env["RAY_USAGE_STATS_ENABLED"] == "0"
        assert any(m["mountPath"] == "/shared" for m in container["volumeMounts"])


def test_runtime_env_template_has_the_keys_submit_fills():
    env = _load("runtime_env.yaml")
    assert set(env) == {"working_dir", "excludes", "env_vars"}
    assert {".git", ".venv", "*.arrow", "*.ckpt"} <= set(env["excludes"])
    assert env["env_vars"] == {"RAY_USAGE_STATS_ENABLED": "0", "NO_ALBUMENTATIONS_UPDATE": "1"}
