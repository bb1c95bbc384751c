"""CLI conventions users bring from ``ray job`` and common CLIs: --version, global flags on either
side of the subcommand, the --set grammar, a path is a path and a bare name a preset, help
text everywhere, the ``ray job``-shaped job flags, and third-party noise only with --debug.

Parsing is checked in process (cheap); what a user sees (exit codes, stderr) in a subprocess.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import shardtrain
from shardtrain.cli import build_parser, expand_set, main
from shardtrain.core import offline
from tests.conftest import REPO


def _cli(*args: str, cwd: Path = REPO, env: dict | None = None) -> subprocess.CompletedProcess:
    base = {"SHARDTRAIN_OFFLINE": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "HOME": str(cwd)}
    return subprocess.run([sys.executable, "-m", "shardtrain.cli", *args], cwd=cwd, env={**base, **(env or {})},
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def in_process(monkeypatch):
    """``main([...])`` in this process: restore the noise switches and the env var it exports."""
    monkeypatch.setenv(offline.QUIET_ENV, "0")
    yield
    offline.show_third_party()


def test_version():
    res = _cli("--version")
    assert res.returncode == 0 and res.stdout.strip() == f"shardtrain {shardtrain.__version__}"


@pytest.mark.parametrize("argv", [
    ["--debug", "-q", "run", "demo"],
    ["run", "demo", "--debug", "-q"],
    ["--debug", "run", "-q", "demo"],
    ["run", "--quiet", "demo", "--debug"],
])
def test_global_flags_before_or_after_the_subcommand(argv):
    args = build_parser().parse_args(argv)
    assert (args.debug, args.quiet, args.config) == (True, True, "demo")
    plain = build_parser().parse_args(["run", "demo"])
    assert (plain.debug, plain.quiet) == (False, False)
    for command in (["status", "j"], ["logs", "j"], ["stop", "j"], ["list"], ["jobs"], ["presets"], ["inspect", "d"],
                    ["submit", "demo"], ["demo"], ["predict", "r", "--input", "i", "--out", "o.parquet"]):
        assert build_parser().parse_args([*command, "--debug"]).debug is True, command


@pytest.mark.parametrize("argv, config, overrides", [
    (["--set", "a.b=1", "demo"], "demo", ["a.b=1"]),                          # the config is never swallowed
    (["--set", "a=1", "b.c=2", "demo"], "demo", ["a=1", "b.c=2"]),              # several after one --set
    (["demo", "--set", "a=1", "--set", "b=x y"], "demo", ["a=1", "b=x y"]),     # repeatable
    (["--set=a=1", "demo"], "demo", ["a=1"]),
    (["--set", "data_dir=/x=y", "./my=cfg.yaml"], "./my=cfg.yaml", ["data_dir=/x=y"]),  # "/" before "=": a path
    (["--set", "model.hidden=[64, 32]", "name=a b", "cfg.yaml"], "cfg.yaml", ["model.hidden=[64, 32]", "name=a b"]),
])
def test_set_grammar(argv, config, overrides):
    args = build_parser().parse_args(["run", *argv])
    assert (args.config, args.overrides) == (config, overrides)


def test_set_needs_key_value_and_stops_at_double_dash():
    assert expand_set(["--set", "a=1", "--", "b=2"]) == ["--set", "a=1", "--", "b=2"]
    res = _cli("run", "--set", "demo")
    assert res.returncode == 2 and "argument --set: expected KEY=VALUE, got 'demo'" in res.stderr


def test_set_before_the_config_runs(tmp_path, capsys, in_process):
    assert main(["run", "--set", "train.max_epochs=3", "model.dropout=0.1", "demo", "--print-config",
                 "--out", str(tmp_path)]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["name"] == "demo" and cfg["train"]["max_epochs"] == 3 and cfg["model"]["dropout"] == 0.1


def test_a_path_is_a_path_and_a_bare_name_a_preset(tmp_path):
    (tmp_path / "demo").mkdir()  # a folder named like the preset
    (tmp_path / "demo" / "x.txt").write_text("not a config")
    res = _cli("run", "demo", "--print-config", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert yaml.safe_load(res.stdout)["name"] == "demo"
    mine = tmp_path / "mine.yaml"
    mine.write_text(yaml.safe_dump({"dataset": {"name": "digits"}, "train": {"max_epochs": 4}}))
    for spelling in ("mine.yaml", "./mine.yaml", str(mine)):
        res = _cli("run", spelling, "--print-config", cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        cfg = yaml.safe_load(res.stdout)
        assert (cfg["name"], cfg["train"]["max_epochs"]) == ("mine", 4)
    (tmp_path / "plain").write_text("train: {max_epochs: 4}\n")  # a bare name: a preset, even if a file exists
    res = _cli("run", "plain", "--print-config", cwd=tmp_path)
    assert res.returncode == 2 and "./plain.yaml" in res.stderr
    res = _cli("run", "./demo", "--print-config", cwd=tmp_path)
    assert res.returncode == 2 and res.stderr.strip().startswith("error: demo: not a config file")


def test_unknown_preset_is_one_line_with_did_you_mean(tmp_path):
    res = _cli("run", "fashion-mnst", "--print-config", cwd=tmp_path)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith("error: 'fashion-mnst' is neither a config file nor a preset; did you mean 'fashion-mnist'?")
    assert "presets: demo, fashion-mnist" in line


def _walk(parser: argparse.ArgumentParser, name: str = "shardtrain"):
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _walk(sub, f"{name} {sub_name}")


def test_every_argument_has_help_and_help_lists_exit_codes_and_env():
    for name, parser in _walk(build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                assert all(a.help for a in action._choices_actions), name
                continue
            assert action.help, f"{name} {action.option_strings or action.dest}: no help text"
    res = _cli("--help")
    assert res.returncode == 0
    for text in ("exit codes:", "130", "STOPPED", "environment variables:", "SHARDTRAIN_DATA", "SHARDTRAIN_OFFLINE",
                 "XDG_CACHE_HOME", "RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN",
                 "RAY_AUTH_TOKEN_PATH", "list (jobs)"):
        assert text in res.stdout, text
    for command in ("status", "logs", "stop", "list"):
        res = _cli(command, "--help")
        assert res.returncode == 0 and "--address URL" in res.stdout and "Ray job server" in res.stdout
    res = _cli("predict", "--help")
    assert res.returncode == 0
    for text in ("RUN", "--input FILE_OR_DIR", "--out FILE", "--out-dir DIR", "--data-dir DIR", "--overwrite",
                 "--batch-size N", "_index.json", "rejects.jsonl"):
        assert text in res.stdout, text


def test_predict_arguments():
    p = build_parser()
    args = p.parse_args(["predict", "--debug", "my-run", "--input", "new.csv", "--out", "p.parquet", "--overwrite",
                         "--out-dir", "o", "--data-dir", "d", "--batch-size", "64"])
    assert (args.command, args.run, args.input, args.out, args.out_dir, args.data_dir, args.overwrite,
            args.batch_size, args.debug) == ("predict", "my-run", "new.csv", "p.parquet", "o", "d", True, 64, True)
    plain = p.parse_args(["predict", "r", "--input", "i", "--out", "o.parquet"])
    assert (plain.out_dir, plain.data_dir, plain.overwrite, plain.batch_size) == ("shardtrain-out", None, False, 4096)
    res = _cli("predict", "r", "--out", "o.parquet")
    assert res.returncode == 2 and "the following arguments are required: --input" in res.stderr


def test_predict_bad_run_is_one_line_exit_2(tmp_path):
    res = _cli("predict", "nope", "--out-dir", str(tmp_path), "--input", str(tmp_path), "--out", "p.parquet",
               cwd=tmp_path)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith("error: run: nope: not a run directory")
    assert not (tmp_path / "p.parquet").exists()


def test_job_flags_mirror_ray_job():
    p = build_parser()
    assert p.parse_args(["submit", "demo"]).wait is True                 # waits by default, as `ray job submit`
    assert p.parse_args(["submit", "demo", "--no-wait"]).wait is False
    assert p.parse_args(["submit", "demo", "--wait"]).wait is True        # the old flag is a no-op
    args = p.parse_args(["submit", "--set", "a=1", "demo", "--env", "A=1", "--env", "B=x=y", "--submission-id", "s-1",
                         "--runtime-env", "env.yaml"])
    assert (args.config, args.overrides, args.env, args.submission_id, args.runtime_env) == \
        ("demo", ["a=1"], ["A=1", "B=x=y"], "s-1", "env.yaml")
    assert p.parse_args(["submit", "demo", "--runtime-env-json", "{}"]).runtime_env_json == "{}"
    assert p.parse_args(["logs", "j", "-f"]).follow is True
    assert p.parse_args(["logs", "j", "--follow"]).follow is True
    assert p.parse_args(["list"]).command == "list" and p.parse_args(["jobs"]).command == "jobs"
    both = _cli("submit", "demo", "--runtime-env", "a.yaml", "--runtime-env-json", "{}")
    assert both.returncode == 2 and "not allowed with" in both.stderr
    bad_env = _cli("submit", "demo", "--env", "NOVALUE")
    assert bad_env.returncode == 2 and "argument --env: expected KEY=VALUE" in bad_env.stderr


NOISE = """
import logging, sys, warnings
import shardtrain.cli  # what the console script imports first
from shardtrain.core import offline
if sys.argv[1] == "quiet":
    offline.quiet_third_party()
elif sys.argv[1] == "debug":
    offline.quiet_third_party(); offline.show_third_party()
logging.basicConfig(level=logging.INFO, format="%(message)s")
logging.getLogger("ray._private.authentication.authentication_token_setup").warning(
    "Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled to opt out.")
logging.getLogger("pytorch_lightning.utilities.rank_zero").info("\\U0001F4A1 Tip: For seamless cloud logging, try litlogger")
logging.getLogger("lightning_fabric.utilities.rank_zero").info("\\U0001F4A1 Tip: try litmodels")
logging.getLogger("pytorch_lightning.utilities.rank_zero").info("GPU available: False, used: False")
logging.getLogger("ray.dashboard.modules.dashboard_sdk").info("Uploading package gcs://_ray_pkg_1.zip.")
logging.getLogger("ray.dashboard.modules.job.sdk").info("WebSocket closed for job j with close code 1000")
logging.getLogger("ray").warning("a real Ray warning")
warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use ...", FutureWarning)
warnings.warn("some other deprecation", FutureWarning)
"""


@pytest.mark.parametrize("mode", ["quiet", "debug", "env"])
def test_third_party_noise_is_dropped_unless_debug(mode):
    env = {"SHARDTRAIN_QUIET_DEPS": "1"} if mode == "env" else {}
    res = subprocess.run([sys.executable, "-c", NOISE, mode], capture_output=True, text=True, timeout=120,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), **env}, encoding="utf-8")
    assert res.returncode == 0, res.stderr
    noise = ("Token authentication is enabled", "Tip:", "LeafSpec", "Uploading package", "WebSocket closed")
    kept = ("GPU available", "a real Ray warning", "some other deprecation")  # targeted, not a blanket ignore
    for text in kept:
        assert text in res.stderr, (mode, text)
    for text in noise:
        assert (text in res.stderr) == (mode == "debug"), (mode, text, res.stderr)


def test_cli_exports_the_quiet_switch_for_its_children(tmp_path, capsys, in_process, monkeypatch):
    import os

    assert main(["presets"]) == 0
    assert os.environ[offline.QUIET_ENV] == "1"
    assert main(["presets", "--debug"]) == 0
    assert os.environ[offline.QUIET_ENV] == "0"
