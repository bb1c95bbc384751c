"""CLF parsing: real NASA lines against a naive regex oracle, corrupted lines, block reading."""

from __future__ import annotations

import datetime
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from shardtrain.core.errors import ShardtrainError
from shardtrain.readers import httplog
from tests.conftest import dataset_dir

NASA = Path("nasa-http") / "NASA_access_log_Aug95.first20000.log"
_ORACLE = re.compile(r'^(\S+) \S+ \S+ \[([^\]]+)\] "(\S+) (.*?)(?: (HTTP/\d\.\d))?" (\d{3}) (\d+|-)$')


@pytest.fixture(scope="module")
def nasa_lines() -> list[str]:
    """The 20,000 real lines, without newlines."""
    return (dataset_dir("nasa-http") / NASA).read_text(encoding="ascii").splitlines()


def oracle(line: str) -> dict:
    """One line parsed the slow, obvious way."""
    m = _ORACLE.match(line)
    host, when, method, path, proto, status, nbytes = m.groups()
    ts = datetime.datetime.strptime(when, "%d/%b/%Y:%H:%M:%S %z")
    return {
        "host": host, "ts": int(ts.timestamp()), "tz_offset": int(ts.utcoffset().total_seconds()),
        "method": method, "path": path, "protocol": proto or "", "status": int(status),
        "bytes": 0 if nbytes == "-" else int(nbytes),
    }


def rows(parsed: dict, idx: int) -> dict:
    """Row ``idx`` of a parsed block as plain Python values (oracle keys only)."""
    out = {}
    for key in ("host", "ts", "tz_offset", "method", "path", "protocol", "status", "bytes"):
        col = parsed[key]
        out[key] = col[idx].as_py() if isinstance(col, pa.Array) else int(col[idx])
    return out


def test_real_lines_match_the_naive_oracle(nasa_lines: list[str]) -> None:
    sample = nasa_lines[:1500] + nasa_lines[-500:]
    parsed = httplog.parse_clf(pa.array(sample), 1)
    assert (parsed["reject_reason"] == "").all()
    for i in range(0, len(sample), 7):
        assert rows(parsed, i) == oracle(sample[i]), sample[i]
    assert parsed["ts"][0] == 807249601  # 1995-08-01 00:00:01 -0400
    assert parsed["status"].dtype == np.int16 and parsed["bytes"].dtype == np.int64


@pytest.mark.dataset("nasa-http")
def test_real_file_parses_without_rejects(data_dir: Path) -> None:
    blocks = [httplog.parse_clf(lines, first)
              for first, lines in httplog.iter_line_blocks(data_dir / NASA, 4096)]
    parsed = httplog.concat_parsed(blocks)
    assert len(parsed["ts"]) == 20000 and (parsed["reject_reason"] == "").all()
    assert np.array_equal(parsed["line_no"], np.arange(1, 20001))
    assert Counter(parsed["status"].tolist()) == {200: 18083, 304: 1485, 302: 244, 404: 187, 403: 1}
    assert Counter(parsed["method"].to_pylist()) == {"GET": 19952, "HEAD": 46, "POST": 2}
    assert len(set(parsed["host"].to_pylist())) == 1656
    assert (np.diff(parsed["ts"]) >= 0).all()  # provenance: timestamps never decrease


GOOD = 'h.example.com - - [01/Aug/1995:10:00:00 -0400] "GET /a/b.gif HTTP/1.0" 200 123'
CORRUPTIONS = {
    "garbage_line": "\x00\x17 this is not a log line at all",
    "truncated_line": 'h.example.com - - [01/Aug/1995:10:00:00 -0400] "GET /a/b.gif HTT',
    "bad_timestamp": 'h.example.com - - [32/Aug/1995:10:00:00 -0400] "GET /a HTTP/1.0" 200 1',
    "bad_timestamp_month": 'h.example.com - - [01/Foo/1995:10:00:00 -0400] "GET /a HTTP/1.0" 200 1',
    "bad_timestamp_format": 'h.example.com - - [1995-08-01T10:00:00] "GET /a HTTP/1.0" 200 1',
    "bad_bytes": 'h.example.com - - [01/Aug/1995:10:00:00 -0400] "GET /a HTTP/1.0" 200 12k',
    "bad_status": 'h.example.com - - [01/Aug/1995:10:00:00 -0400] "GET /a HTTP/1.0" OK 12',
    "bad_request": 'h.example.com - - [01/Aug/1995:10:00:00 -0400] "" 200 12',
    "extra_fields": GOOD + " trailing junk",
    "empty_line": "",
}


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_corrupted_line_is_rejected_alone(nasa_lines: list[str], kind: str) -> None:
    clean = nasa_lines[:40]
    dirty = clean[:17] + [CORRUPTIONS[kind]] + clean[17:]
    ref = httplog.parse_clf(clean, 1)
    got = httplog.parse_clf(np.array(dirty, dtype=object), 1)
    expected = kind if not kind.startswith("bad_timestamp") else "bad_timestamp"
    assert got["reject_reason"][17] == expected
    assert got["reject_detail"][17] == CORRUPTIONS[kind][:200]
    kept = np.flatnonzero(got["reject_reason"] == "")
    assert kept.size == len(clean)  # nothing else lost
    assert np.array_equal(got["line_no"][kept], np.r_[1:18, 19:42])
    for key in ("ts", "status", "bytes"):
        assert np.array_equal(got[key][kept], ref[key])
    assert got["path"].take(pa.array(kept)).equals(ref["path"])


def test_bytes_numpy_and_arrow_inputs_agree(nasa_lines: list[str]) -> None:
    sample = nasa_lines[100:160]
    ref = httplog.parse_clf(pa.array(sample), 101)
    for variant in (np.array(sample), np.array([s.encode() for s in sample], dtype=object),
                    pa.array([s.encode() for s in sample], pa.binary()), [s + "\r" for s in sample]):
        got = httplog.parse_clf(variant, 101)
        assert np.array_equal(got["ts"], ref["ts"]) and got["host"].equals(ref["host"])
        assert got["protocol"].equals(ref["protocol"])


def test_http09_request_without_protocol_and_odd_paths() -> None:
    lines = [
        'a - - [01/Aug/1995:00:00:01 +0000] "GET /" 200 -',
        'b - - [01/Aug/1995:00:00:01 +0130] "GET /x y.html HTTP/1.0" 404 -',
        'c - - [29/Feb/1996:23:59:59 -0400] "POST /cgi?q="x" HTTP/1.1" 500 7',
    ]
    p = httplog.parse_clf(lines, 1)
    assert list(p["reject_reason"]) == ["", "", ""]
    assert p["path"].to_pylist() == ["/", "/x y.html", '/cgi?q="x"']
    assert p["protocol"].to_pylist() == ["", "HTTP/1.0", "HTTP/1.1"]
    assert p["bytes"].tolist() == [0, 0, 7]
    utc = datetime.timezone.utc
    assert p["ts"][1] == int(datetime.datetime(1995, 7, 31, 22, 30, 1, tzinfo=utc).timestamp())
    assert p["tz_offset"][1] == 5400
    assert p["ts"][2] == int(datetime.datetime(1996, 3, 1, 3, 59, 59, tzinfo=utc).timestamp())
    bad = httplog.parse_clf(['c - - [29/Feb/1995:23:59:59 -0400] "GET / HTTP/1.0" 200 7'], 1)
    assert bad["reject_reason"][0] == "bad_timestamp"  # 1995 is not a leap year


def test_iter_line_blocks_numbers_lines_and_keeps_last_line(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    text = "\n".join(f"line {i}" for i in range(1, 24)) + "\r\nbad \xff utf8"
    path.write_bytes(text.encode("latin-1"))
    blocks = list(httplog.iter_line_blocks(path, 5, chunk_bytes=17))
    assert [first for first, _ in blocks] == [1, 6, 11, 16, 21]
    lines = [s for _, arr in blocks for s in arr.to_pylist()]
    assert len(lines) == 24 and lines[22] == "line 23" and lines[0] == "line 1"
    assert lines[23] == "bad \ufffd utf8"


def test_parse_batch_takes_line_numbers_from_sample_id(nasa_lines: list[str]) -> None:
    batch = {"sample_id": np.array([7, 70, 700]), "line": np.array(["junk", *nasa_lines[:2]])}
    got = httplog.parse_batch(batch)
    assert got["line_no"].tolist() == [7, 70, 700]
    assert got["reject_reason"].tolist() == ["garbage_line", "", ""]
    assert got["host"].to_pylist() == ["", "in24.inetnebr.com", "uplherc.upl.com"]


def test_missing_file_raises_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(ShardtrainError, match="nope.log"):
        next(httplog.iter_line_blocks(tmp_path / "nope.log", 10))
