"""``shardtrain submit | status | logs | stop | list``: runs as Ray jobs, through ``JobSubmissionClient``.

The commands mirror ``ray job``: ``submit`` waits and streams the job's logs unless
``--no-wait`` (``--wait`` is accepted, a no-op); ``logs -f``; ``list`` (alias ``jobs``).

``submit`` validates the config here, then submits ``python -m shardtrain.cli run CONFIG ...``
with a runtime env built from ``cluster/runtime_env.yaml``:

* from a source checkout or an editable install (``pyproject.toml`` beside ``pipelines/``),
  the checkout is the job's ``working_dir`` (minus ``.git``, virtualenvs, outputs, shards
  and checkpoints), and shardtrain itself travels in ``py_modules``: a ``shardtrain/``
  directory assembled from the imported package's folders (``stage_package``), since the
  checkout's folders are ``pipelines/``, ``models/``, ... and not an importable ``shardtrain``;
* from an installed package, nothing is shipped: the cluster's image must have
  shardtrain installed (``cluster/cluster.yaml`` and ``cluster/rayjob.yaml`` do). We do not
  ``pip install`` at job start: that needs the network on every node and may not match
  the version that validated the config;
* ``--working-dir DIR`` ships DIR instead of the checkout, in both cases (from a checkout,
  shardtrain still travels in ``py_modules``).

The user's runtime env (``--runtime-env FILE`` or ``--runtime-env-json JSON``, as in ``ray job
submit``) and ``--env KEY=VALUE`` are merged into that one (``merge_runtime_env``):
``env_vars`` are merged key by key (template, then the runtime env, then ``--env``: the last
wins); ``py_modules`` and ``excludes`` are appended to ours (shardtrain's own package stays
first); a ``working_dir`` there acts as ``--working-dir`` (a local directory) or is passed as it
is (a remote URI); every other key (``pip``, ``uv``, ``conda``, ``container``, ``config``, ...)
is the user's. A user map (``prepare.map`` / ``augment.map``: ``"pkg.mod:fn"``) must import
on the cluster: its top-level package or module travels in ``py_modules`` unless it is
installed (site-packages) or importable from the root of the shipped working dir
(``map_py_modules``). Values of environment variables are never printed. ``--submission-id`` names
the job (default ``shardtrain-<config>-<UTC time>-<4 hex>``).

A run that trains with Lightning inside the driver on GPUs (``train.launcher: local``,
``train.accelerator: gpu``) reserves ``train.devices`` GPUs for the entrypoint, so the
driver lands on a GPU node. Data paths (``--data-dir``, ``--out``) are never uploaded: they are passed as they are
and resolved on the cluster. The address is ``--address``, else ``$RAY_API_SERVER_ADDRESS``,
else ``$RAY_ADDRESS``, else ``http://127.0.0.1:8265`` (a ``ray dashboard`` port-forward).

Token authentication: with ``RAY_AUTH_MODE=token`` the token is always sent; with the
mode unset it is sent only after the server answers 401. It is read as Ray reads it:
``$RAY_AUTH_TOKEN``, then the file ``$RAY_AUTH_TOKEN_PATH``, then ``~/.ray/auth_token``.
``RAY_AUTH_MODE=disabled`` never sends one. The token never appears in any output.

Exit codes (``status``, ``submit`` unless ``--no-wait``, ``logs -f``):

========================  =====
job status                exit
========================  =====
SUCCEEDED                 0
PENDING, RUNNING          0 (``status`` only; ``submit``/``logs -f`` wait for the end)
FAILED                    1
STOPPED                   3
shardtrain error          2 (cannot connect, auth, unknown job id, bad config)
interrupted (Ctrl-C)      130 (the job keeps running)
========================  =====

``stop`` exits 0 once the job is in a final state, 1 if it is still running after
``STOP_TIMEOUT_S``; ``list`` and ``logs`` exit 0; ``submit --no-wait`` exits 0 once submitted.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import os
import re
import secrets
import shlex
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import yaml

from shardtrain.core import offline
from shardtrain.core.errors import ShardtrainError

log = logging.getLogger("shardtrain")

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
EXIT_CODES = {"SUCCEEDED": 0, "PENDING": 0, "RUNNING": 0, "FAILED": 1, "STOPPED": 3}
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
HTTP_TIMEOUT_S = (10, 120)  # (connect, read) for every request to the job server
STOP_TIMEOUT_S = 60
POLL_S = 1.0
TEMPLATE = Path(__file__).with_name("runtime_env.yaml")


# ---------------------------------------------------------------- address and token


def resolve_address(address: str | None) -> str:
    """The job server URL: ``--address``, ``$RAY_API_SERVER_ADDRESS``, ``$RAY_ADDRESS``, the default."""
    url = (address or os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS")
           or DEFAULT_ADDRESS).strip().rstrip("/")
    return url if "://" in url else f"http://{url}"


def find_token() -> tuple[str, str] | None:
    """``(token, where it came from)`` in Ray's order, or None; ``where`` never holds the token."""
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return os.environ["RAY_AUTH_TOKEN"].strip(), "$RAY_AUTH_TOKEN"
    candidates = []
    if os.environ.get("RAY_AUTH_TOKEN_PATH"):
        candidates.append((Path(os.environ["RAY_AUTH_TOKEN_PATH"]).expanduser(), "$RAY_AUTH_TOKEN_PATH"))
    candidates.append((Path.home() / ".ray" / "auth_token", "~/.ray/auth_token"))
    for path, name in candidates:
        try:
            token = path.read_text(encoding="utf-8").strip()
        except OSError:
            continue
        if token:
            return token, f"{name} ({path})" if name.startswith("$") else name
    return None


# Values that must never appear in our output besides the token: env_vars the user gave the job
# (``--env``, a runtime env) whose names look like credentials. Filled by ``merge_runtime_env``.
SECRET_NAME = re.compile(r"(?i)(token|secret|passw|key|credential|auth)")
_secrets: set[str] = set()


def mask(text: str) -> str:
    """``text`` with every token we could have sent (and every secret env var value) replaced by
    ``****``, cut to one line."""
    found = find_token()
    tokens = {os.environ.get("RAY_AUTH_TOKEN", "").strip()} | ({found[0]} if found else set()) | _secrets
    for token in tokens:
        if len(token) >= 4:
            text = text.replace(token, "****")
    text = re.sub(r"(?i)(bearer\s+)\S+", r"\1****", text)
    return " ".join(text.split())[:500]


# ---------------------------------------------------------------- the client


def _client_class() -> type:
    """``JobSubmissionClient`` with a timeout on every HTTP request (a hung server never blocks us)."""
    from ray.job_submission import JobSubmissionClient

    class _Client(JobSubmissionClient):
        def _do_request(self, method: str, endpoint: str, **kwargs: Any) -> Any:
            kwargs.setdefault("timeout", HTTP_TIMEOUT_S)
            return super()._do_request(method, endpoint, **kwargs)

    return _Client


@contextmanager
def _no_address_env() -> Iterator[None]:
    """Hide ``RAY_ADDRESS``/``RAY_API_SERVER_ADDRESS``: Ray's client would let them override ``address``."""
    saved = {k: os.environ.pop(k) for k in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS") if k in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


@contextmanager
def job_errors(url: str, job_id: str | None = None, new_job: str | None = None) -> Iterator[None]:
    """Turn Ray/requests failures into one-line ``ShardtrainError``s with tokens masked (``job_id``: an
    existing job the request is about; ``new_job``: the submission id being submitted)."""
    import requests
    from ray.exceptions import AuthenticationError

    try:
        yield
    except ShardtrainError:
        raise
    except AuthenticationError as exc:
        raise ShardtrainError(f"job server {url}: {_auth_hint(str(exc))}") from None
    except (ConnectionError, requests.exceptions.RequestException) as exc:
        raise ShardtrainError(
            f"cannot reach the Ray job server at {url} ({type(exc).__name__}); start a cluster, "
            f"port-forward its dashboard (ray dashboard cluster/cluster.yaml) or pass --address") from None
    except ValueError as exc:  # Ray's own check of the runtime env, a duplicate submission id, ...
        raise ShardtrainError(f"job server {url}: {mask(str(exc))}") from None
    except RuntimeError as exc:
        text = str(exc)
        if new_job and "already exists" in text:
            raise ShardtrainError(f"job {new_job!r} already exists on {url}: a submission id is used once; "
                                  f"pass another --submission-id") from None
        if job_id and ("404" in text or "does not exist" in text):
            raise ShardtrainError(f"job {job_id!r}: no such job on {url} (list them with `shardtrain list`)") from None
        raise ShardtrainError(f"job server {url}: {mask(text)}") from None


def _auth_hint(message: str) -> str:
    """What to do about a 401/403 from the job server (never includes the token)."""
    if "Authentication failed" in message or "invalid" in message.lower():
        found = find_token()
        where = found[1] if found else "the request"
        return f"the token from {where} was rejected (get the cluster's token on the head: ray get-auth-token)"
    return ("token authentication is on and no token was found: set RAY_AUTH_TOKEN, point "
            "RAY_AUTH_TOKEN_PATH at a file holding it, or write it to ~/.ray/auth_token "
            "(on the head: ray get-auth-token)")


def _quiet_ray_client_logs() -> None:
    """Ray's client logs every packaging step at INFO; keep its warnings, drop the chatter."""
    logging.getLogger("ray").setLevel(logging.WARNING)
    # "'.git' is now ignored by default": we exclude it ourselves, the warning is noise.
    logging.getLogger("ray._private.runtime_env.working_dir").setLevel(logging.ERROR)


def connect(address: str | None) -> tuple[Any, str]:
    """A connected client and the URL it talks to; retries once with the token after a 401."""
    from ray.exceptions import AuthenticationError

    url = resolve_address(address)
    _quiet_ray_client_logs()
    mode = os.environ.get("RAY_AUTH_MODE", "").lower()
    found = None if mode == "disabled" else find_token()
    if mode == "token" and found is None:
        raise ShardtrainError(f"job server {url}: RAY_AUTH_MODE=token but {_auth_hint('')}")
    client_cls = _client_class()
    with job_errors(url), _no_address_env():
        headers = {"Authorization": f"Bearer {found[0]}"} if mode == "token" and found else {}
        try:
            return client_cls(url, headers=headers), url
        except AuthenticationError as exc:
            if headers or found is None or "Authentication required" not in str(exc):
                raise
        log.info("job server %s wants a token; using the one from %s", url, found[1])
        return client_cls(url, headers={"Authorization": f"Bearer {found[0]}"}), url


# ---------------------------------------------------------------- submit


def _package_dir(name: str) -> Path:
    """Where the (already imported) package ``name`` lives, by its spec: importing the root
    ``shardtrain`` by name here would make layer 5 import layer 6 (its ``run``) in the import graph."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ShardtrainError(f"{name}: not importable, cannot stage the package")
    return Path(next(iter(spec.submodule_search_locations))).resolve()


def source_checkout() -> Path | None:
    """The repository root when running from a source checkout (or an editable install)."""
    root = _package_dir("shardtrain").parent
    if (root / "pyproject.toml").is_file() and (root / "cluster" / "jobs.py").is_file() \
            and "site-packages" not in root.parts:
        return root
    return None


def stage_package(dest: Path) -> Path:
    """Assemble an importable ``dest/shardtrain/`` from the imported package; returns that directory.

    In a source checkout or an editable install the package's folders are ``pipelines/``
    (``shardtrain`` itself) and ``models/``, ``augment/``, ``cluster/`` (its subpackages,
    mapped by ``package-dir`` in ``pyproject.toml``); a wheel has them nested already. Either
    way the result is the wheel's layout, for Ray's ``py_modules`` or for tools (import-linter)
    that read a package from one directory tree. Caches are left out.
    """
    out = Path(dest) / "shardtrain"
    if out.exists():
        raise ShardtrainError(f"{out}: already exists; stage the package into an empty directory")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    root = _package_dir("shardtrain")
    shutil.copytree(root, out, ignore=ignore)
    for name in ("models", "augment", "cluster"):  # the subpackages package-dir maps from other folders
        where = _package_dir(f"shardtrain.{name}")
        if where.parent != root:  # not already inside the copied tree
            shutil.copytree(where, out / name, ignore=ignore)
    return out


def build_runtime_env(working_dir: Path | None, package: Path | None = None) -> dict[str, Any]:
    """The template ``cluster/runtime_env.yaml`` with ``working_dir`` filled (or dropped), plus
    ``py_modules: [package]`` when shardtrain itself must travel (a staged ``shardtrain/``)."""
    env = yaml.safe_load(TEMPLATE.read_text(encoding="utf-8")) or {}
    if working_dir is None:
        env.pop("working_dir", None)
        env.pop("excludes", None)
    else:
        env["working_dir"] = str(working_dir)
    if package is not None:
        env["py_modules"] = [str(package)]
    return env


def map_py_modules(cfg: Any, working_dir: Path | None) -> list[str]:
    """The local paths to ship in ``py_modules`` so the config's user maps import on the cluster.

    For each ``prepare.map`` / ``augment.map`` spec the module's top-level package (a
    directory) or single-file module is located here, without importing it. Nothing is
    shipped for one under site-packages (the cluster's image must install it too) or for
    one at the root of ``working_dir`` (Ray puts the working dir on every worker's path).
    """
    paths: list[str] = []
    for key, section in (("prepare.map", cfg.prepare), ("augment.map", cfg.augment)):
        spec = section.map
        if not spec:
            continue
        top = spec.split(":")[0].strip().split(".")[0]
        if top == "shardtrain":
            continue  # shipped (or installed) already
        try:
            found = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            found = None
        if found is None or (found.origin is None and not found.submodule_search_locations):
            raise ShardtrainError(f"config key '{key}': cannot find module {top!r} of {spec!r} here "
                                  "(put its directory on PYTHONPATH, or install it)")
        if found.submodule_search_locations:  # a package: ship its directory
            where = Path(next(iter(found.submodule_search_locations))).resolve()
        else:
            where = Path(found.origin).resolve()
        if where.suffix not in ("", ".py") or {"site-packages", "dist-packages"} & set(where.parts):
            continue  # installed (or compiled): the cluster's environment must provide it
        if working_dir is not None and where.parent == working_dir.resolve():
            continue  # importable from the shipped working dir's root
        if str(where) not in paths:
            paths.append(str(where))
    return paths


def _read_runtime_env(file: str | None, inline: str | None) -> dict[str, Any]:
    """The user's runtime env from ``--runtime-env FILE`` (YAML or JSON) or ``--runtime-env-json``."""
    import json

    if file:
        path = Path(file).expanduser()
        if not path.is_file():
            raise ShardtrainError(f"--runtime-env {file}: no such file")
        try:
            env = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ShardtrainError(f"--runtime-env {file}: not YAML/JSON ({' '.join(str(exc).split())})") from None
        where = f"--runtime-env {file}"
    elif inline:
        try:
            env = json.loads(inline)
        except json.JSONDecodeError as exc:
            raise ShardtrainError(f"--runtime-env-json: not JSON ({exc})") from None
        where = "--runtime-env-json"
    else:
        return {}
    if env is None:
        return {}
    if not isinstance(env, dict):
        raise ShardtrainError(f"{where}: a runtime env must be a mapping, got {type(env).__name__}")
    if "env_vars" in env and not isinstance(env["env_vars"], dict):
        raise ShardtrainError(f"{where}: env_vars must be a mapping of names to strings")
    for key in ("py_modules", "excludes"):
        if key in env and not isinstance(env[key], list):
            raise ShardtrainError(f"{where}: {key} must be a list")
    return env


def _parse_env(items: list[str]) -> dict[str, str]:
    """``--env KEY=VALUE`` flags as a mapping (the last of a repeated KEY wins)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ShardtrainError(f"--env {item!r}: expected KEY=VALUE")
        out[key.strip()] = value
    return out


def merge_runtime_env(base: dict[str, Any], user: dict[str, Any], env: dict[str, str] | None = None) -> dict[str, Any]:
    """shardtrain's runtime env ``base`` with the user's runtime env and ``--env`` variables merged in.

    ``env_vars``: base, then ``user``'s, then ``env`` (the last wins); ``py_modules`` and
    ``excludes``: ours first, then the user's (duplicates dropped); ``working_dir`` is handled by
    the caller (it decides what travels); any other key is the user's.
    """
    out = dict(base)
    for key, value in user.items():
        if key == "working_dir":
            continue
        if key == "env_vars":
            continue
        if key in ("py_modules", "excludes"):
            merged = list(out.get(key, []))
            merged += [v for v in value if v not in merged]
            out[key] = merged
        else:
            out[key] = value
    env_vars = {**base.get("env_vars", {}), **{str(k): str(v) for k, v in (user.get("env_vars") or {}).items()},
                **(env or {})}
    if env_vars:
        out["env_vars"] = env_vars
    for name, value in env_vars.items():
        if SECRET_NAME.search(name) and len(value) >= 4:
            _secrets.add(value)
    return out


def _config_arg(config: str, working_dir: Path | None) -> str:
    """The config as the job sees it: a preset name, or a file path relative to the working dir."""
    from shardtrain.config import is_config_path

    path = Path(config)
    if not is_config_path(config) or not path.is_file():
        return config
    if working_dir is not None:
        try:
            return path.resolve().relative_to(working_dir).as_posix()
        except ValueError:
            raise ShardtrainError(
                f"{config}: config file is outside the directory shipped to the cluster ({working_dir}); "
                f"move it there or pass --working-dir with a directory that holds it") from None
    log.warning("%s: no working_dir is shipped, so this path must exist on the cluster", config)
    return str(path.resolve())


def build_entrypoint(args: argparse.Namespace, config: str) -> str:
    """``python -m shardtrain.cli run CONFIG ...``, every argument shell-quoted."""
    argv = ["python", "-m", "shardtrain.cli", "run", config, "--stage", args.stage,
            "--executor", args.executor, "--out", args.out]
    if args.data_dir:
        argv += ["--data-dir", args.data_dir]
    for item in args.overrides:  # one --set each: a value is never read as the next flag's
        argv += ["--set", item]
    if args.force:
        argv.append("--force")
    if getattr(args, "debug", False):
        argv.append("--debug")  # the job shows tracebacks and third-party noise too
    return shlex.join(argv)


def entrypoint_gpus(cfg: Any, stage: str) -> int:
    """GPUs to reserve for the job's driver: Lightning trains in the driver when ``train.launcher``
    is ``local``, so a GPU run must land on a GPU node; Ray Train (``launcher: ray``) places its own."""
    trains = stage in ("train", "evaluate", "all")
    if not trains or cfg.train.launcher != "local" or cfg.train.accelerator not in ("gpu", "cuda"):
        return 0
    return cfg.train.devices if isinstance(cfg.train.devices, int) and cfg.train.devices > 0 else 1


def _submission_id(name: str) -> str:
    """A readable unique id: ``shardtrain-<config name>-<UTC time>-<4 hex>``."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-")[:40] or "run"
    return f"shardtrain-{slug}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(2)}"


def _working_dir(flag: str | None, from_env: Any) -> tuple[Path | None, str | None]:
    """``(local directory to ship, remote URI)`` from ``--working-dir`` or a runtime env's ``working_dir``
    (at most one of them), else the source checkout."""
    if flag and from_env:
        raise ShardtrainError("--working-dir and a working_dir in the runtime env: give one of them")
    given, name = (flag, "--working-dir") if flag else (from_env, "runtime env working_dir")
    if not given:
        return source_checkout(), None
    if not isinstance(given, str):
        raise ShardtrainError(f"{name}: expected a directory or a URI, got {type(given).__name__}")
    if "://" in given:
        return None, given
    working_dir = Path(given).expanduser().resolve()
    if not working_dir.is_dir():
        raise ShardtrainError(f"{name} {given}: not a directory")
    return working_dir, None


def cmd_submit(args: argparse.Namespace) -> int:
    """Validate the config locally, submit the run, print the job id; then follow it unless ``--no-wait``."""
    from shardtrain.config import load_config

    cfg = load_config(args.config, list(args.overrides))
    user_env = _read_runtime_env(getattr(args, "runtime_env", None), getattr(args, "runtime_env_json", None))
    env_vars = _parse_env(getattr(args, "env", None) or [])
    working_dir, remote_dir = _working_dir(args.working_dir, user_env.get("working_dir"))
    for flag, value in (("--out", args.out), ("--data-dir", args.data_dir)):
        if value and "://" not in value and not Path(value).is_absolute():
            log.warning("%s %s is relative: on the cluster it resolves inside the job's temporary working "
                        "directory; pass a path on shared storage", flag, value)
    if remote_dir is not None:
        config_arg = args.config  # a file must then be inside that URI, at this relative path
        if Path(args.config).is_file():
            log.warning("%s: the working_dir is %s, so this path must exist inside it", args.config, remote_dir)
    else:
        config_arg = _config_arg(args.config, working_dir)
    entrypoint = build_entrypoint(args, config_arg)
    gpus = entrypoint_gpus(cfg, args.stage)
    ships_package = source_checkout() is not None  # else the cluster's installed shardtrain runs
    user_maps = map_py_modules(cfg, working_dir)  # before connecting: a missing module is a config error
    client, url = connect(args.address)
    submission_id = args.submission_id or _submission_id(cfg.name)
    with tempfile.TemporaryDirectory(prefix="shardtrain-submit-") as staging, job_errors(url, new_job=submission_id):
        package = stage_package(Path(staging)) if ships_package else None
        base = build_runtime_env(working_dir, package)
        if user_maps:
            base["py_modules"] = list(base.get("py_modules", [])) + user_maps
        # The job's processes (its Ray workers included) drop third-party noise unless --debug.
        base.setdefault("env_vars", {})[offline.QUIET_ENV] = "0" if getattr(args, "debug", False) else "1"
        runtime_env = merge_runtime_env(base, user_env, env_vars)
        if remote_dir is not None:
            runtime_env["working_dir"] = remote_dir
            runtime_env.pop("excludes", None)  # they apply to a local directory only
        job_id = client.submit_job(  # uploads working_dir and py_modules before it returns
            entrypoint=entrypoint, runtime_env=runtime_env,
            submission_id=submission_id,
            metadata={"shardtrain.config": cfg.name, "shardtrain.stage": args.stage},
            **({"entrypoint_num_gpus": gpus} if gpus else {}))
    shipped = [f"working_dir {working_dir or remote_dir}"] if working_dir or remote_dir else []
    shipped += ["shardtrain in py_modules"] if ships_package else ["the cluster's installed shardtrain"]
    shipped += [f"user map {Path(p).name} in py_modules" for p in user_maps]
    extra = sorted(set(user_env) - {"working_dir"})
    if extra or env_vars:  # names only: values (credentials) are never printed
        shipped.append("runtime env " + ", ".join(extra + [f"env {name}" for name in sorted(env_vars)]))
    log.info("submitted %s to %s (%s)", job_id, url, ", ".join(shipped))
    print(job_id, flush=True)
    if not args.wait:
        return 0
    return _follow(client, url, job_id)


# ---------------------------------------------------------------- status, logs, stop, jobs


def _status(client: Any, url: str, job_id: str) -> tuple[str, str]:
    """``(STATUS, message)`` of a job."""
    with job_errors(url, job_id):
        info = client.get_job_info(job_id)
    return str(info.status), info.message or ""


def _wait_terminal(client: Any, url: str, job_id: str, timeout: float | None = None) -> str:
    """Poll until the job is SUCCEEDED/FAILED/STOPPED (or ``timeout``); returns the last status."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        status, _ = _status(client, url, job_id)
        if status in TERMINAL or (deadline is not None and time.monotonic() > deadline):
            return status
        time.sleep(POLL_S)


def _follow(client: Any, url: str, job_id: str) -> int:
    """Stream a job's logs to stdout until it ends; exit with its status's code."""
    import aiohttp

    async def tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            sys.stdout.write(chunk)
            sys.stdout.flush()

    try:
        with job_errors(url, job_id):
            try:
                asyncio.run(tail())
            except aiohttp.ClientError as exc:
                log.warning("log stream of %s broke (%s); waiting for the job to end", job_id,
                            type(exc).__name__)
        status = _wait_terminal(client, url, job_id)
    except KeyboardInterrupt:
        log.warning("stopped following; job %s keeps running (shardtrain stop %s)", job_id, job_id)
        raise
    message = _status(client, url, job_id)[1]
    log.info("job %s: %s%s", job_id, status, f" ({mask(message)})" if message else "")
    return EXIT_CODES[status]


def cmd_status(args: argparse.Namespace) -> int:
    """Print the job's status on stdout (its message on stderr); exit code from the table."""
    client, url = connect(args.address)
    status, message = _status(client, url, args.job_id)
    print(status, flush=True)
    if message:
        log.info("job %s: %s", args.job_id, mask(message))
    return EXIT_CODES.get(status, 0)


def cmd_logs(args: argparse.Namespace) -> int:
    """Print the job's logs so far; ``-f/--follow`` streams them and exits with the job's code."""
    client, url = connect(args.address)
    if args.follow:
        _status(client, url, args.job_id)  # a clear error for an unknown id before streaming
        return _follow(client, url, args.job_id)
    with job_errors(url, args.job_id):
        text = client.get_job_logs(args.job_id)
    sys.stdout.write(text)
    sys.stdout.flush()
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    """Ask the job to stop and wait until it is in a final state."""
    client, url = connect(args.address)
    with job_errors(url, args.job_id):
        client.stop_job(args.job_id)
    status = _wait_terminal(client, url, args.job_id, timeout=STOP_TIMEOUT_S)
    print(status, flush=True)
    return 0 if status in TERMINAL else 1


def cmd_jobs(args: argparse.Namespace) -> int:
    """List every job on the cluster, oldest first: id, status, start time, entrypoint."""
    client, url = connect(args.address)
    with job_errors(url):
        jobs = client.list_jobs()
    rows = []
    for job in sorted(jobs, key=lambda j: j.start_time or 0):
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(job.start_time / 1000)) \
            if job.start_time else "-"
        entry = job.entrypoint if len(job.entrypoint) <= 70 else job.entrypoint[:67] + "..."
        rows.append((job.submission_id or job.job_id or "-", str(job.status), started, entry))
    if not rows:
        log.info("no jobs on %s", url)
        return 0
    width = max(len(r[0]) for r in rows)
    print(f"{'JOB':<{width}}  {'STATUS':<9}  {'STARTED':<19}  ENTRYPOINT")
    for job_id, status, started, entry in rows:
        print(f"{job_id:<{width}}  {status:<9}  {started:<19}  {entry}")
    return 0


COMMANDS = {"submit": cmd_submit, "status": cmd_status, "logs": cmd_logs, "stop": cmd_stop, "list": cmd_jobs,
            "jobs": cmd_jobs}


def main(args: argparse.Namespace) -> int:
    """Dispatch ``shardtrain submit|status|logs|stop|list`` (``jobs`` = ``list``; called by ``shardtrain.cli``)."""
    if args.command not in COMMANDS:
        raise ShardtrainError(f"unknown cluster command {args.command!r}")
    return COMMANDS[args.command](args)
