"""The http-log kind: any Common/Combined Log Format log, test_path, predict_job; nasa-http as its alias."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest

import shardtrain
from shardtrain.config import from_dict, load_config
from shardtrain.core.errors import ShardtrainError
from shardtrain.datasets.logs import HttpLog, NasaHttp
from shardtrain.readers.httplog import parse_clf
from shardtrain.shards import ShardSet

TZ = dt.timezone(dt.timedelta(hours=-4))
HOSTS = ([f"host{i}.example.com" for i in range(30)] + [f"10.0.{i}.{i + 1}" for i in range(20)]
         + [f"2001:db8::{i:x}" for i in range(20)])
GARBAGE = "this is not a log line"
BAD_STATUS = 'h - - [01/Aug/1995:00:00:01 -0400] "GET / HTTP/1.0" 2x0 12 "-" "curl/8"'


def line(host: str, ts: int, url: str = "/", status: int = 200, size: str = "512", agent: str = "Mozilla/5.0 (X11)",
         method: str = "GET") -> str:
    """One Combined Log Format line."""
    stamp = dt.datetime.fromtimestamp(ts, TZ).strftime("%d/%b/%Y:%H:%M:%S -0400")
    return f'{host} - - [{stamp}] "{method} {url} HTTP/1.0" {status} {size} "http://example.com/" "{agent}"'


def combined_log(path: Path, seed: int, sessions: int, start: int = 807249600,
                 bad: tuple[tuple[int, str], ...] = ()) -> list[str]:
    """A synthetic Combined log: host sessions in time order; long sessions tend to hit 404s later."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(sessions):
        host = HOSTS[rng.integers(len(HOSTS))]
        n = int(rng.integers(1, 25))
        ts = start + int(rng.integers(0, 2 * 86400)) + np.cumsum(rng.integers(1, 120, n))
        for j, t in enumerate(ts):
            status = 404 if n > 10 and j > 2 and rng.random() < 0.3 else int(rng.choice([200, 200, 304]))
            url = str(rng.choice(["/", "/index.html", "/img/a.gif", "/cgi-bin/q?x=1"]))
            size = "-" if status == 304 else str(rng.integers(99, 9999))
            rows.append((int(t), line(host, int(t), url, status, size)))
    lines = [r[1] for r in sorted(rows)]
    for at, text in bad:
        lines.insert(at, text)
    path.write_text("\n".join(lines) + "\n")
    return lines


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train.log (with two bad lines, lines 6 and 51) and test.log, a later day (line 4 bad)."""
    root = tmp_path_factory.mktemp("logs")
    combined_log(root / "train.log", seed=0, sessions=300, bad=((5, GARBAGE), (50, BAD_STATUS)))
    combined_log(root / "test.log", seed=1, sessions=120, start=807249600 + 3 * 86400, bad=((3, GARBAGE),))
    return root


def test_parser_reads_combined_ipv6_and_dash_sizes_and_diagnoses_bad_lines() -> None:
    lines = [
        line("2001:db8::1", 807249601, size="-", agent='Mozilla/5.0 (compatible; \\"x\\")'),
        'h.example - - [01/Aug/1995:00:00:02 -0400] "GET /a.gif HTTP/1.0" 200 1839',  # plain CLF
        line("10.1.2.3", 807249603, status=404, size="0"),
        line("h", 807249604) + ' "extra"',
        'h - - [01/Aug/1995:00:00:01 -0400] "GET /a HTTP/1.0" 200 1839 "only a referer"',
        BAD_STATUS,
        GARBAGE,
    ]
    got = parse_clf(lines, 10)
    reasons = list(got["reject_reason"])
    assert reasons[:3] == ["", "", ""]
    assert reasons[3:] == ["extra_fields", "extra_fields", "bad_status", "garbage_line"]
    assert got["host"].to_pylist()[:3] == ["2001:db8::1", "h.example", "10.1.2.3"]
    assert list(got["bytes"][:3]) == [0, 1839, 0] and list(got["status"][:3]) == [200, 200, 404]
    assert got["path"].to_pylist()[:2] == ["/", "/a.gif"] and got["protocol"].to_pylist()[0] == "HTTP/1.0"
    assert got["user_agent"].to_pylist()[:2] == ['Mozilla/5.0 (compatible; \\"x\\")', ""]
    assert got["referer"].to_pylist()[0] == "http://example.com/"
    assert list(got["line_no"][5:]) == [15, 16]


def test_http_log_prepares_a_combined_log_with_rejects_and_a_transform(logs: Path, tmp_path: Path) -> None:
    cfg = {"dataset": {"name": "http-log", "options": {"path": str(logs / "train.log")}}}
    indexes = shardtrain.run(cfg, stage="prepare", out=tmp_path / "o", executor="local")["prepare"]
    train = indexes["train"]
    assert all(indexes[s]["rows"] > 10 for s in ("train", "val", "test"))
    assert train["dataset"] == "http-log" and train["features"]["x"]["shape"] == [21]
    assert train["rejects"]["reasons"] == {"garbage_line": 1, "bad_status": 1}
    rejects = [json.loads(r) for r in (tmp_path / "o/shards/prepare/train/_rejects.jsonl").read_text().splitlines()]
    assert [(r["sample_id"], r["reason"]) for r in rejects] == [(6, "garbage_line"), (51, "bad_status")]
    assert rejects[0]["detail"] == f"train.log:6: {GARBAGE}"
    transform = train["transform"]
    assert transform["kind"] == "http-log" and len(transform["standardisation"]["mean"]) == 21
    x = ShardSet(tmp_path / "o/shards/prepare/train").concat("x")
    assert np.allclose(x.mean(0), 0, atol=1e-4)  # standardised with its own (train) statistics


def test_test_path_is_the_test_split_and_a_directory_is_one_log(logs: Path, tmp_path: Path) -> None:
    opts = {"path": str(logs / "train.log"), "test_path": str(logs / "test.log")}
    indexes = shardtrain.run({"dataset": {"name": "http-log", "options": opts}}, stage="prepare",
                             out=tmp_path / "o", executor="local")["prepare"]
    alone = shardtrain.run({"dataset": {"name": "http-log", "options": {"path": str(logs / "test.log")}}},
                           stage="prepare", out=tmp_path / "alone", executor="local")["prepare"]
    test_ids = ShardSet(tmp_path / "o/shards/prepare/test").concat("sample_id")
    every = np.concatenate([ShardSet(tmp_path / f"alone/shards/prepare/{s}").concat("sample_id")
                            for s in ("train", "val", "test")])
    assert sorted(test_ids) == sorted(every)  # the test log's own connections, by its own line numbers
    assert indexes["test"]["rejects"]["reasons"] == {"garbage_line": 1}  # the test log's bad line, in test
    assert indexes["train"]["rejects"]["reasons"] == {"garbage_line": 1, "bad_status": 1}
    one = shardtrain.run({"dataset": {"name": "http-log", "options": {"path": str(logs / "train.log")}}},
                         stage="prepare", out=tmp_path / "one", executor="local")["prepare"]
    # The first log's connections are all in train + val now (none held out for test).
    assert indexes["train"]["rows"] + indexes["val"]["rows"] == sum(one[s]["rows"] for s in ("train", "val", "test"))
    mean = np.asarray(indexes["train"]["transform"]["standardisation"]["mean"])
    assert not np.allclose(mean, alone["train"]["transform"]["standardisation"]["mean"])
    # A directory (or a glob) of two files reads as their concatenation.
    parts = tmp_path / "parts"
    parts.mkdir()
    text = (logs / "train.log").read_text().splitlines(keepends=True)
    (parts / "a.log").write_text("".join(text[:1000]))
    (parts / "b.log").write_text("".join(text[1000:]))
    glued = tmp_path / "glued.log"
    glued.write_text("".join(text))
    for path, out in ((parts, "dir"), (str(parts / "*.log"), "glob"), (glued, "file")):
        shardtrain.run({"dataset": {"name": "http-log", "options": {"path": str(path)}}}, stage="prepare",
                       out=tmp_path / out, executor="local")
    for split in ("train", "test"):
        a, b, c = (ShardSet(tmp_path / f"{o}/shards/prepare/{split}").concat("x") for o in ("dir", "glob", "file"))
        assert np.array_equal(a, c) and np.array_equal(b, c)


def test_a_gzipped_log_reads_as_the_plain_one(logs: Path, tmp_path: Path) -> None:
    import gzip

    from shardtrain.readers.httplog import HttpLogOptions
    from shardtrain.stages.logs import parse_logs

    gz = tmp_path / "train.log.gz"
    gz.write_bytes(gzip.compress((logs / "train.log").read_bytes()))
    a = parse_logs([gz], HttpLogOptions(block_lines=500), "local")
    b = parse_logs([logs / "train.log"], HttpLogOptions(), "local")
    assert np.array_equal(a["ts"], b["ts"]) and a["host"].equals(b["host"])
    assert list(a["reject_detail"][a["reject_reason"] != ""]) == ["train.log.gz:6: " + GARBAGE,
                                                                    "train.log.gz:51: " + BAD_STATUS]
    with pytest.raises(ShardtrainError, match=r"--input: .*nothing\*\.log matches no file"):
        from_dict({"dataset": {"name": "http-log", "options": {"path": "x"}}}).dataset.predict_job(
            None, {"transform": {}}, tmp_path / "nothing*.log")


def test_predict_job_uses_the_fitted_transform(logs: Path, tmp_path: Path) -> None:
    opts = {"path": str(logs / "train.log"), "test_path": str(logs / "test.log")}
    cfg = from_dict({"dataset": {"name": "http-log", "options": opts}})
    shardtrain.run(cfg, stage="prepare", out=tmp_path / "o", executor="local")
    fitted = json.loads((tmp_path / "o/shards/prepare/train/_index.json").read_text())
    job = cfg.dataset.predict_job(cfg, fitted, logs / "test.log")
    assert job.split == "predict" and job.describe["transform"] == fitted["transform"]
    test = ShardSet(tmp_path / "o/shards/prepare/test")
    pos = {int(s): i for i, s in enumerate(job.source["sample_id"])}
    rows = [pos[int(s)] for s in test.concat("sample_id")]
    assert len(job.source["sample_id"]) > len(rows)  # connections near the log's end are predicted too
    assert np.allclose(job.source["x"][rows], test.concat("x"))
    assert np.array_equal(job.source["label_error"][rows], test.concat("label_error"))
    with pytest.raises(ShardtrainError, match="no http-log transform"):
        cfg.dataset.predict_job(cfg, {"labels": {}}, logs / "test.log")


def test_nasa_http_is_http_log_with_the_registry_default() -> None:
    preset = load_config("nasa-http")
    assert isinstance(preset.dataset, NasaHttp) and isinstance(preset.dataset, HttpLog)
    assert preset.dataset.options.path is None and preset.model.kind == "multitask"
    old = from_dict({"dataset": {"name": "nasa-http", "options": {"path": "x.log", "first_k": 2, "long_n": 5}}})
    assert old.dataset.options.first_k == 2
    with pytest.raises(ShardtrainError, match="config key 'dataset.options.path': http-log needs the log"):
        from_dict({"dataset": {"name": "http-log"}})
    cfg = from_dict({"dataset": {"name": "http-log", "options": {"path": "/no/such.log"}}})
    with pytest.raises(ShardtrainError, match="config key 'dataset.options.path': /no/such.log: log file not found"):
        cfg.dataset.plan(cfg)
    assert from_dict({"dataset": {"name": "http-log", "options": {"path": "a"}}}).model.kind == "multitask"


# ---------------------------------------------------------------- kdd99's predict_job (same module family)
