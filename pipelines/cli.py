"""The ``shardtrain`` command line: run stages, inspect shards, the demo, and Ray jobs.

Every user-facing failure is a ``ShardtrainError`` printed as one line
(``error: ...``) with exit code 2; ``--debug`` shows the traceback instead.

Conventions (as in ``ray job`` and most CLIs):

* ``--version``; the global flags ``--debug`` and ``-q/--quiet`` go before or after the
  subcommand.
* ``--set KEY=VALUE`` is repeatable, and the tokens right after one ``--set`` that look like
  ``KEY=VALUE`` (a dotted name, then ``=``) belong to it too: ``--set a=1 b=2 demo`` sets two
  keys and ``demo`` stays the config. A token without ``=`` (or whose ``=`` comes after a
  ``/``, as in a path) ends the list.
* A config that contains ``/`` or ends in ``.yaml``/``.yml``/``.json`` is a file; a bare name is
  a preset (``shardtrain.config.load_raw``).
* On a normal run the known third-party noise is dropped (``shardtrain.core.offline``);
  ``--debug`` shows it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys

from shardtrain.core import offline
from shardtrain.core.errors import ShardtrainError

from shardtrain.api import STAGES

# A token that continues a --set list: a dotted key, then "=" (paths have "/" before any "=").
OVERRIDE_TOKEN = re.compile(r"^[A-Za-z_][\w-]*(\.[\w-]+)*=")

EPILOG = """\
exit codes:
  0    success (status: the job SUCCEEDED, or is PENDING/RUNNING)
  1    the job FAILED (status, submit, logs -f); inspect --verify found a mismatch; stop timed out
  2    error: a bad config, flag or input, cannot reach or authenticate to the job server,
       unknown job id (one line "error: ..."; --debug shows the traceback)
  3    the job was STOPPED
  130  interrupted (Ctrl-C); a submitted job keeps running

environment variables:
  SHARDTRAIN_DATA          raw data root searched after --data-dir (a folder or a URI such as s3://bucket/data)
  SHARDTRAIN_OFFLINE=1     never download a missing dataset file
  XDG_CACHE_HOME           downloads go to $XDG_CACHE_HOME/shardtrain (default ~/.cache/shardtrain)
  RAY_ADDRESS              run --executor ray joins this cluster instead of starting a local Ray;
                           the job server when RAY_API_SERVER_ADDRESS is unset
  RAY_API_SERVER_ADDRESS   the job server of submit/status/logs/stop/list (default http://127.0.0.1:8265)
  RAY_AUTH_MODE            token: always send the token; disabled: never (unset: only after a 401)
  RAY_AUTH_TOKEN           the cluster's auth token (never printed)
  RAY_AUTH_TOKEN_PATH      a file holding the token (then ~/.ray/auth_token)
  SHARDTRAIN_CACHE         local cache of remote shard splits and staged runs (default ~/.cache/shardtrain/shards)
  SHARDTRAIN_CACHE_MAX_BYTES  size limit of that cache (e.g. 50G; least recently used entries go first)
  SHARDTRAIN_S3_ENDPOINT   an S3-compatible endpoint for s3:// (also storage.endpoint_override, AWS_ENDPOINT_URL)
  AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION  credentials and region for s3:// (never printed or recorded)
  SHARDTRAIN_QUIET_DEPS    set by shardtrain for the processes it starts (1: drop third-party noise)

Run `shardtrain COMMAND --help` for a command's arguments."""


def expand_set(argv: list[str]) -> list[str]:
    """``--set a=1 b=2`` becomes ``--set a=1 --set b=2``; the first token after ``--set`` is its
    value whatever it is, the next ones only while they look like ``KEY=VALUE``; ``--`` ends it."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        if token == "--":
            out += argv[i:]
            break
        out.append(token)
        i += 1
        if token == "--set" and i < len(argv):
            out.append(argv[i])
            i += 1
            while i < len(argv) and OVERRIDE_TOKEN.match(argv[i]):
                out += ["--set", argv[i]]
                i += 1
    return out


def _key_value(flag: str):
    """An argparse ``type`` that accepts only ``KEY=VALUE`` (a usage error otherwise)."""
    def check(text: str) -> str:
        key, sep, _ = text.partition("=")
        if not sep or not key.strip():
            raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
        return text
    check.__name__ = flag  # argparse names the type in its message
    return check


class Parser(argparse.ArgumentParser):
    """``argparse`` plus the ``--set`` grammar of ``expand_set`` (for this parser and its subparsers)."""

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        args = sys.argv[1:] if args is None else list(args)
        return super().parse_known_args(expand_set(args), namespace)


def _version() -> str:
    """The imported package's version (``shardtrain`` is always imported before its ``cli``)."""
    version = getattr(sys.modules.get("shardtrain"), "__version__", None)
    if version is None:
        from importlib.metadata import version as dist_version

        version = dist_version("shardtrain")
    return f"shardtrain {version}"


def _add_global_flags(p: argparse.ArgumentParser, top: bool) -> None:
    """``--debug`` and ``-q``, accepted before and after the subcommand. In a subparser the default
    is SUPPRESS, so a flag given before the subcommand is not reset by the subparser."""
    default = False if top else argparse.SUPPRESS
    p.add_argument("--debug", action="store_true", default=default,
                   help="show tracebacks and the third-party warnings a normal run hides")
    p.add_argument("-q", "--quiet", action="store_true", default=default, help="log warnings and errors only")


def _add_run_args(p: argparse.ArgumentParser, config: bool = True) -> None:
    """Arguments shared by ``run``, ``demo`` and ``submit``."""
    if config:
        p.add_argument("config", metavar="CONFIG",
                       help="a preset name (fashion-mnist, demo, ...; see `shardtrain presets`) or a config file "
                            "(a path: contains '/' or ends in .yaml/.yml/.json, e.g. ./my.yaml)")
    p.add_argument("--stage", choices=STAGES, default="all", help="which stage to run (default: all)")
    p.add_argument("--executor", choices=("ray", "local"), default="ray",
                   help="run stages on Ray (default) or in this process without Ray")
    p.add_argument("--data-dir", default=None, metavar="DIR_OR_URI",
                   help="where raw dataset files are looked for first (then $SHARDTRAIN_DATA, the cache): a "
                        "folder or a URI such as s3://bucket/data (each task then reads its own part from there)")
    p.add_argument("--out", default="shardtrain-out", metavar="DIR_OR_URI",
                   help="output root: shards/ and runs/ go here, a local directory or a URI such as "
                        "s3://bucket/prefix (default: shardtrain-out)")
    p.add_argument("--set", dest="overrides", action="append", default=[], type=_key_value("--set"),
                   metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.max_epochs=2; repeatable, and the KEY=VALUE "
                        "tokens right after one --set belong to it (--set a=1 b=2); never takes the config")
    p.add_argument("--force", action="store_true", help="re-run stages even when their output is up to date")


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser for every subcommand."""
    parser = Parser(prog="shardtrain", epilog=EPILOG,
                    description="shardtrain: raw data -> Arrow shards -> MLP training, on Ray or in process; Ray jobs.",
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=_version(), help="print the version and exit")
    _add_global_flags(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", title="commands")

    def command(name: str, helptext: str, **kwargs) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=helptext, description=helptext, **kwargs)
        _add_global_flags(p, top=False)
        return p

    p = command("run", "run stages of a preset or config")
    _add_run_args(p)
    p.add_argument("--address", default=None, metavar="ADDRESS",
                   help="join this Ray cluster (default: $RAY_ADDRESS, else start a private local Ray)")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config (after --set overrides) as YAML and exit without running")
    p.add_argument("--run", default=None, metavar="RUN",
                   help="with --stage evaluate: the run to evaluate, a run directory or a run name under "
                        "OUT/runs (default: the newest run whose training finished)")

    command("presets", "list the presets shipped with shardtrain, one line each")

    p = command("demo", "the whole pipeline offline on scikit-learn's digits (under 2 minutes)")
    _add_run_args(p, config=False)
    p.set_defaults(config="demo", address=None)

    p = command("predict", "predict with a finished run over new data or a shard directory; writes one Parquet file")
    p.add_argument("run", metavar="RUN",
                   help="the run: a run directory, or a run name under --out-dir/runs (its training must have "
                        "finished)")
    p.add_argument("--input", required=True, metavar="FILE_OR_DIR",
                   help="a shard split directory (holding _index.json, e.g. OUT/shards/prepare/test) or new raw "
                        "data of the run's dataset kind (a file or folder, featurised as the run's prepare did)")
    p.add_argument("--out", required=True, metavar="FILE",
                   help="the Parquet file to write (its folder is created); rejected input records go to "
                        "FILE.rejects.jsonl")
    p.add_argument("--out-dir", default="shardtrain-out", metavar="DIR_OR_URI",
                   help="the output root (a directory or a URI) whose runs/ RUN names a run in "
                        "(default: shardtrain-out)")
    p.add_argument("--data-dir", default=None, metavar="DIR_OR_URI",
                   help="where the dataset kind looks for the resources it needs, a folder or a URI "
                        "(as in `shardtrain run`)")
    p.add_argument("--overwrite", action="store_true", help="replace --out when it exists (refused otherwise)")
    p.add_argument("--batch-size", type=int, default=4096, metavar="N", help="rows per model call (default: 4096)")

    p = command("inspect", "describe a shard directory")
    p.add_argument("dir", metavar="DIR", help="a split directory (holding _index.json, or index.json before v3)")
    p.add_argument("--verify", action="store_true", help="re-hash every shard; exit 1 on any mismatch")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")

    address_help = "the Ray job server (default: $RAY_API_SERVER_ADDRESS, $RAY_ADDRESS, http://127.0.0.1:8265)"
    p = command("submit", "submit a run as a Ray job; waits and streams its logs unless --no-wait")
    _add_run_args(p)
    p.add_argument("--address", default=None, metavar="URL", help=address_help)
    p.add_argument("--no-wait", dest="wait", action="store_false",
                   help="print the job id and return at once instead of streaming the logs to the end")
    p.add_argument("--wait", dest="wait", action="store_true",
                   help="wait for the job and exit with its status (the default; kept for compatibility)")
    p.set_defaults(wait=True)
    p.add_argument("--working-dir", default=None, metavar="DIR",
                   help="ship this directory as the job's working_dir (default: the source checkout, if any)")
    env_file = p.add_mutually_exclusive_group()
    env_file.add_argument("--runtime-env", default=None, metavar="FILE",
                          help="a YAML/JSON runtime env merged into the one shardtrain builds (env_vars, pip, ...)")
    env_file.add_argument("--runtime-env-json", default=None, metavar="JSON",
                          help="the same as --runtime-env, inline as JSON")
    p.add_argument("--env", dest="env", action="append", default=[], type=_key_value("--env"),
                   metavar="KEY=VALUE",
                   help="an environment variable of the job (repeatable; wins over the runtime env)")
    p.add_argument("--submission-id", default=None, metavar="ID",
                   help="the job id to use (default: shardtrain-<config>-<UTC time>-<4 hex>)")

    job_id_help = "the job's submission id, as `shardtrain submit` printed it or `shardtrain list` shows it"
    for name, helptext in (("status", "print a job's status (SUCCEEDED, RUNNING, ...); exit code by status"),
                           ("logs", "print a job's logs so far, or stream them with -f"),
                           ("stop", "stop a job and wait until it has stopped")):
        p = command(name, helptext)
        p.add_argument("job_id", metavar="JOB_ID", help=job_id_help)
        p.add_argument("--address", default=None, metavar="URL", help=address_help)
        if name == "logs":
            p.add_argument("-f", "--follow", action="store_true",
                           help="stream the logs until the job ends and exit with its status")
    p = command("list", "list the jobs on a cluster: id, status, start time, entrypoint", aliases=["jobs"])
    p.add_argument("--address", default=None, metavar="URL", help=address_help)
    return parser


def cmd_run(args: argparse.Namespace) -> int:
    """``shardtrain run`` / ``demo``: load the config, then run the asked stages (or only print the config)."""
    from shardtrain.api import resolve_config, run

    if getattr(args, "print_config", False):
        import yaml

        from shardtrain.config import replace, to_dict

        cfg = resolve_config(args.config, args.overrides)
        from shardtrain.shards.storage import redact_obj

        if args.data_dir:
            cfg = replace(cfg, dataset={"data_dir": args.data_dir})
        # A URI may carry credentials (s3://KEY:SECRET@bucket/...): never printed.
        print(yaml.safe_dump(redact_obj(to_dict(cfg)), sort_keys=False, width=1000), end="")
        return 0
    run(args.config, args.stage, args.out, args.overrides, executor=args.executor,
        data_dir=args.data_dir, address=args.address, force=args.force, run=getattr(args, "run", None))
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    """``shardtrain presets``: each preset's name and its one-line description."""
    from shardtrain.config import describe_presets

    rows = describe_presets()
    width = max(len(name) for name, _ in rows)
    for name, description in rows:
        print(f"{name:<{width}}  {description}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    """``shardtrain predict``: the run's predictions over ``--input`` to ``--out``; prints one summary line."""
    from shardtrain.predict import predict, summary_line

    result = predict(args.run, args.input, args.out, out_dir=args.out_dir, data_dir=args.data_dir,
                     overwrite=args.overwrite, batch_size=args.batch_size)
    print(summary_line(result), flush=True)
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    """``shardtrain inspect``: print what a shard directory holds; ``--verify`` re-hashes."""
    from shardtrain.shards.inspection import describe, format_text

    report = describe(args.dir, verify=args.verify)  # a path or a URI (s3://...): not Path(), which folds "//"
    print(json.dumps(report, indent=2) if args.json else format_text(report))
    return 1 if report.get("problems") else 0


def _third_party_noise(show: bool) -> None:
    """Hide (normal run) or show (``--debug``) the known third-party noise, here and in the
    processes this one starts (a local Ray's workers, DDP ranks inherit the environment)."""
    if show:
        offline.show_third_party()
        os.environ[offline.QUIET_ENV] = "0"
    else:
        offline.quiet_third_party()
        os.environ[offline.QUIET_ENV] = "1"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``shardtrain`` console script."""
    args = build_parser().parse_args(argv)
    _third_party_noise(show=args.debug)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(message)s", stream=sys.stderr)
    try:
        if args.command in ("run", "demo"):
            return cmd_run(args)
        if args.command == "inspect":
            return cmd_inspect(args)
        if args.command == "predict":
            return cmd_predict(args)
        if args.command == "presets":
            return cmd_presets(args)
        from shardtrain.cluster import jobs

        return jobs.main(args)
    except ShardtrainError as exc:
        if args.debug:
            raise
        from shardtrain.shards.storage import redact_text

        print(f"error: {redact_text(str(exc))}", file=sys.stderr)  # a message naming a URI never shows a secret
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
