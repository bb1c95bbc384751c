"""Web-log parsing + sessionisation: the columnar parser vs a per-line regex loop, lines/s per core.

    PYTHONPATH=. python benchmarks/bench_logs.py [--quick] [--data-dir ../shared/data]

The NASA excerpt (20,000 lines) is repeated 10x (2x with --quick) as consecutive days
(the date field is rewritten per copy), written to a temporary file, and both sides
read that file. The baseline is the straightforward program: for each line
``re.match``, ``datetime.strptime``, append to a per-host Python list, then sort each
host's requests and count connections with the same 30-minute gap rule. Speeds are
lines per CPU-second of this process (``time.process_time``), i.e. per core, which
stays meaningful on a shared, busy machine; the best of ``repeats`` runs is kept.
Both sides must find the same number of connections. Never run as a test.
"""

from __future__ import annotations

import argparse
import datetime
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from shardtrain.features import logs
from shardtrain.readers import httplog

NASA = Path("nasa-http") / "NASA_access_log_Aug95.first20000.log"
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
GAP = 1800
_LINE_RX = re.compile(r'^(\S+) (\S+) (\S+) \[([^\]]+)\] "(\S+) (.*?)(?: (HTTP/\S+))?" (\d{3}) (\d+|-)$')


def make_log(src: Path, dst: Path, copies: int) -> int:
    """Write ``copies`` day-shifted copies of ``src`` to ``dst``; returns the number of lines."""
    text = src.read_text(encoding="ascii")
    with open(dst, "w", encoding="ascii") as f:
        for day in range(copies):
            f.write(text.replace("[01/Aug/1995", f"[{day + 1:02d}/Aug/1995"))
    return text.count("\n") * copies


def baseline(path: Path, sessionize: bool = True) -> int:
    """Per-line regex + strptime + dict grouping; returns connections (or parsed lines)."""
    by_host: dict[str, list[tuple[float, int]]] = {}
    parsed = 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line_no, line in enumerate(f, 1):
            m = _LINE_RX.match(line.rstrip("\r\n"))
            if m is None:
                continue
            ts = datetime.datetime.strptime(m.group(4), "%d/%b/%Y:%H:%M:%S %z").timestamp()
            _status, _bytes = int(m.group(8)), 0 if m.group(9) == "-" else int(m.group(9))
            by_host.setdefault(m.group(1), []).append((ts, line_no))
            parsed += 1
    if not sessionize:
        return parsed
    conns = 0
    for reqs in by_host.values():
        reqs.sort()
        prev = None
        for ts, _ in reqs:
            if prev is None or ts - prev > GAP:
                conns += 1
            prev = ts
    return conns


def ours(path: Path, sessionize: bool = True, block_lines: int = 65536) -> int:
    """Block reader + columnar parse_clf (+ global sessionize); returns connections (or lines)."""
    blocks = [httplog.parse_clf(lines, first) for first, lines in httplog.iter_line_blocks(path, block_lines)]
    parsed = httplog.concat_parsed(blocks)
    if not sessionize:
        return int(np.sum(parsed["reject_reason"] == ""))
    s = logs.sessionize(parsed, GAP)
    return int(np.unique(s["conn_id"]).size)


def cpu_rate(fn: Callable[[], int], lines: int, repeats: int) -> tuple[float, int]:
    """(best lines per CPU-second over ``repeats`` runs, fn's result)."""
    best, result = 0.0, -1
    for _ in range(repeats):
        start = time.process_time()
        result = fn()
        best = max(best, lines / max(time.process_time() - start, 1e-9))
    return best, result


def run(quick: bool = False, data_dir: Path = DEFAULT_DATA) -> list[dict[str, Any]]:
    """Measure both sides; one dict per measurement (name, ours, baseline, unit, ratio, goal)."""
    copies, repeats = (2, 2) if quick else (10, 3)
    old_threads = pa.cpu_count()
    pa.set_cpu_count(1)  # one core for Arrow too: a per-core comparison
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "access.log"
            lines = make_log(data_dir / NASA, path, copies)
            ours(path)  # warm up: imports, regex compilation
            rows = []
            for name, sess in (("clf parse", False), ("clf parse + sessionize", True)):
                fast, n_fast = cpu_rate(lambda s=sess: ours(path, s), lines, repeats)
                slow, n_slow = cpu_rate(lambda s=sess: baseline(path, s), lines, 1 if quick else 2)
                if n_fast != n_slow:
                    raise AssertionError(f"{name}: ours found {n_fast}, the baseline {n_slow}")
                what = "connections" if sess else "parsed"
                rows.append({"name": f"{name} ({lines} lines, {n_fast} {what})",
                             "ours": fast, "baseline": slow, "unit": "lines/s per core",
                             "ratio": fast / slow, "goal": 5.0})
    finally:
        pa.set_cpu_count(old_threads)
    return rows


def main(argv: list[str] | None = None) -> None:
    """Print the measurements as a small table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 copies of the log instead of 10")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args(argv)
    for r in run(args.quick, args.data_dir):
        print(f"{r['name']:<58} ours {r['ours']:>10.0f}  baseline {r['baseline']:>9.0f} {r['unit']}"
              f"  ratio {r['ratio']:5.1f}x (goal {r['goal']:.0f}x)")


if __name__ == "__main__":
    main()
