"""The ``shardtrain`` command line: run stages, inspect shards, the demo, and Ray jobs.

Every user-facing failure is a ``ShardtrainError`` printed as one line
(``error: ...``) with exit code 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from shardtrain.core.errors import ShardtrainError

from shardtrain.api import STAGES


def _add_run_args(p: argparse.ArgumentParser, config: bool = True) -> None:
    """Arguments shared by ``run``, ``demo`` and ``submit``."""
    if config:
        p.add_argument("config", help="a preset name (fashion-mnist, demo, ...) or a YAML config file")
    p.add_argument("--stage", choices=STAGES, default="all", help="which stage to run (default: all)")
    p.add_argument("--executor", choices=("ray", "local"), default="ray",
                   help="run stages on Ray (default) or in this process without Ray")
    p.add_argument("--data-dir", default=None, help="where raw dataset files are looked for first")
    p.add_argument("--out", default="shardtrain-out", help="output root (shards/ and runs/ go here)")
    p.add_argument("--set", dest="overrides", action="append", default=[], nargs="+", metavar="KEY=VALUE",
                   help="override config keys, e.g. --set train.max_epochs=2 model.dropout=0.2")
    p.add_argument("--force", action="store_true", help="re-run stages even when their output is up to date")


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser for every subcommand."""
    parser = argparse.ArgumentParser(prog="shardtrain", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("-q", "--quiet", action="store_true", help="less logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run stages of a preset or config")
    _add_run_args(p)
    p.add_argument("--address", default=None, help="Ray cluster address (default: start a local Ray)")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config (after --set overrides) as YAML and exit without running")

    sub.add_parser("presets", help="list the presets shipped with shardtrain, one line each")

    p = sub.add_parser("demo", help="the whole pipeline offline on scikit-learn's digits (under 2 minutes)")
    _add_run_args(p, config=False)
    p.set_defaults(config="demo", address=None)

    p = sub.add_parser("inspect", help="describe a shard directory")
    p.add_argument("dir", help="a split directory holding index.json")
    p.add_argument("--verify", action="store_true", help="re-hash every shard; exit 1 on any mismatch")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")

    p = sub.add_parser("submit", help="submit a run as a Ray job")
    _add_run_args(p)
    p.add_argument("--address", default=None, help="Ray dashboard address (default: $RAY_ADDRESS)")
    p.add_argument("--wait", action="store_true", help="wait for the job and exit with its status")
    p.add_argument("--working-dir", default=None, help="ship this directory as the job's working_dir")
    for name, helptext in (("status", "a job's status"), ("logs", "a job's logs"), ("stop", "stop a job")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("job_id")
        p.add_argument("--address", default=None)
        if name == "logs":
            p.add_argument("--follow", action="store_true", help="stream logs until the job ends")
    p = sub.add_parser("jobs", help="list jobs on a cluster")
    p.add_argument("--address", default=None)
    return parser


def _flatten(overrides: list[list[str]]) -> list[str]:
    """argparse's append+nargs gives a list of lists; flatten it."""
    return [item for group in overrides for item in group]


def cmd_run(args: argparse.Namespace) -> int:
    """``shardtrain run`` / ``demo``: load the config, then run the asked stages (or only print the config)."""
    from shardtrain.api import resolve_config, run

    if getattr(args, "print_config", False):
        import yaml

        from shardtrain.config import replace, to_dict

        cfg = resolve_config(args.config, _flatten(args.overrides))
        if args.data_dir:
            cfg = replace(cfg, dataset={"data_dir": args.data_dir})
        print(yaml.safe_dump(to_dict(cfg), sort_keys=False, width=1000), end="")
        return 0
    run(args.config, args.stage, args.out, _flatten(args.overrides), executor=args.executor,
        data_dir=args.data_dir, address=args.address, force=args.force)
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    """``shardtrain presets``: each preset's name and its one-line description."""
    from shardtrain.config import describe_presets

    rows = describe_presets()
    width = max(len(name) for name, _ in rows)
    for name, description in rows:
        print(f"{name:<{width}}  {description}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    """``shardtrain inspect``: print what a shard directory holds; ``--verify`` re-hashes."""
    from shardtrain.shards.inspection import describe, format_text

    report = describe(Path(args.dir), verify=args.verify)
    print(json.dumps(report, indent=2) if args.json else format_text(report))
    return 1 if report.get("problems") else 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``shardtrain`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(message)s", stream=sys.stderr)
    try:
        if args.command in ("run", "demo"):
            return cmd_run(args)
        if args.command == "inspect":
            return cmd_inspect(args)
        if args.command == "presets":
            return cmd_presets(args)
        from shardtrain.cluster import jobs

        return jobs.main(args)
    except ShardtrainError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
