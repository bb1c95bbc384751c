"""Sessionisation, per-connection features and labels, splits and the end-to-end nasa-http prepare."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shardtrain.core.errors import ShardtrainError
from shardtrain.core.validation import validate
from shardtrain.features import logs
from shardtrain.readers import httplog

NASA = Path("nasa-http") / "NASA_access_log_Aug95.first20000.log"
T0 = 807249600  # 1995-08-01 00:00:00 -0400


def clf(host: str, t: int, path: str = "/a.html", status: int = 200, nbytes: str = "10",
        method: str = "GET") -> str:
    """One CLF line at ``T0 + t`` seconds (all within 01/Aug/1995, -0400)."""
    hh, mm, ss = t // 3600, t // 60 % 60, t % 60
    when = f"01/Aug/1995:{hh:02d}:{mm:02d}:{ss:02d} -0400"
    return f'{host} - - [{when}] "{method} {path} HTTP/1.0" {status} {nbytes}'


def sessions_of(lines: list[str], gap: int = 1800) -> dict:
    return logs.sessionize(httplog.parse_clf(lines, 1), gap)


def test_sessionize_splits_on_gap_and_host() -> None:
    lines = [clf("a", 0), clf("b", 5), clf("a", 100), clf("a", 1900),  # 1900-100 == gap: same connection
             clf("b", 2000), clf("a", 3701)]  # 3701-1900 > gap: new connection; b: 1995 s > gap
    s = sessions_of(lines)
    assert s["conn_id"].tolist() == [1, 1, 1, 2, 5, 6]
    assert s["line_no"].tolist() == [1, 3, 4, 2, 5, 6]
    assert s["req_index"].tolist() == [0, 1, 2, 0, 0, 0]
    assert s["host"].to_pylist() == ["a", "a", "a", "b", "b", "a"]


def test_sessionize_drops_rejected_rows() -> None:
    s = sessions_of([clf("a", 0), "garbage", clf("a", 10)])
    assert s["line_no"].tolist() == [1, 3] and "reject_reason" not in s


@pytest.mark.dataset("nasa-http")
def test_blocks_give_the_same_connections_as_one_block(data_dir: Path) -> None:
    path = data_dir / NASA
    one = httplog.concat_parsed([httplog.parse_clf(l, f) for f, l in httplog.iter_line_blocks(path, 10**6)])
    many = httplog.concat_parsed([httplog.parse_clf(l, f) for f, l in httplog.iter_line_blocks(path, 997)])
    s1, s2 = logs.sessionize(one), logs.sessionize(many)
    assert np.array_equal(s1["conn_id"], s2["conn_id"]) and np.array_equal(s1["line_no"], s2["line_no"])
    c1, c2 = logs.connection_features(s1), logs.connection_features(s2)
    assert np.array_equal(c1["x"], c2["x"]) and np.array_equal(c1["label_long"], c2["label_long"])
    assert len(c1["sample_id"]) == 1942
    # connections really do cross the 997-line block boundaries
    blocks_of = [{(ln - 1) // 997 for ln in s1["line_no"][s1["conn_id"] == c]} for c in c1["sample_id"][:200]]
    assert any(len(b) > 1 for b in blocks_of)


def conn_lines(statuses: list[int]) -> list[str]:
    return [clf("h", 60 * i, path=f"/p{i}.gif", status=s) for i, s in enumerate(statuses)]


def test_features_see_only_the_first_k_requests() -> None:
    k = 3
    def feats(statuses: list[int]) -> dict:
        return logs.connection_features(sessions_of(conn_lines(statuses)), first_k=k, long_n=5)

    base = feats([200] * 6)
    later = feats([200] * 3 + [404] + [200] * 2)  # request k+1 fails
    inside = feats([200] * 2 + [404] + [200] * 3)  # request k fails
    assert np.array_equal(base["x"], later["x"])
    assert base["label_error"].tolist() == [0] and later["label_error"].tolist() == [1]
    assert not np.array_equal(base["x"], inside["x"]) and inside["label_error"].tolist() == [0]
    assert base["label_long"].tolist() == [1]  # 6 > long_n=5


def test_feature_values_of_a_small_connection() -> None:
    lines = [clf("1.2.3.4", 0, "/", 200, "100"), clf("1.2.3.4", 10, "/i.gif", 304, "-"),
             clf("1.2.3.4", 40, "/i.gif", 200, "50", "HEAD"), clf("1.2.3.4", 50, "/z", 404)]
    c = logs.connection_features(sessions_of(lines), first_k=3, long_n=3)
    f = dict(zip(logs.FEATURE_NAMES, c["x"][0].tolist()))
    assert f["n_seen"] == 3 and f["log1p_duration_s"] == pytest.approx(np.log1p(40))
    assert f["log1p_bytes_total"] == pytest.approx(np.log1p(150))
    assert f["distinct_path_share"] == pytest.approx(2 / 3) and f["share_3xx"] == pytest.approx(1 / 3)
    assert f["share_4xx"] == 0 and f["image_share"] == pytest.approx(2 / 3)
    assert f["page_share"] == pytest.approx(1 / 3)
    assert f["log1p_gap_max"] == pytest.approx(np.log1p(30))
    assert f["log1p_gap_mean"] == pytest.approx(np.log1p(20))
    assert f["head_share"] == pytest.approx(1 / 3) and f["host_is_ip"] == 1
    assert f["hour_cos"] == pytest.approx(1.0)  # first request at local midnight
    assert c["label_error"].tolist() == [1] and c["label_long"].tolist() == [1]


def test_short_connection_and_censored_tail() -> None:
    lines = [clf("a", 0), clf("b", 100)] + [clf("c", 5000 + 60 * i) for i in range(4)]
    c = logs.connection_features(sessions_of(lines), first_k=3, long_n=3, log_end_ts=T0 + 5180,
                                 gap_seconds=1800)
    assert c["sample_id"].tolist() == [1, 2, 3]
    assert c["x"][:, 0].tolist() == [1, 1, 3]  # n_seen
    # a and b ended more than a gap before the log end: labels known 0; c may go on: error unknown
    assert c["label_error"].tolist() == [0, 0, -1] and c["label_long"].tolist() == [0, 0, 1]


@pytest.mark.dataset("nasa-http")
def test_time_split_and_train_only_standardisation(data_dir: Path) -> None:
    splits, meta = httplog.prepare_http_log(data_dir / NASA, httplog.HttpLogOptions(block_lines=5000), seed=3)
    assert meta["rejects"]["count"] == 0 and meta["connections"] == 1942
    tr, va, te = (splits[s] for s in ("train", "val", "test"))
    n = sum(len(s["sample_id"]) for s in splits.values())
    assert n == 1942 - meta["dropped_short"] - meta["dropped_tail"]
    assert meta["dropped_tail"] > 0 and meta["dropped_short"] > 0
    assert np.allclose(tr["x"].mean(0), 0, atol=1e-4)
    assert tr["x"].dtype == np.float32 and tr["x"].shape[1] == len(meta["feature_names"])
    assert not np.allclose(te["x"].mean(0), 0, atol=1e-2)  # test scaled with train statistics
    assert set(np.unique(tr["label_long"])) <= {0, 1} and (va["label_error"] >= -1).all()
    ids = np.concatenate([s["sample_id"] for s in splits.values()])
    assert np.unique(ids).size == ids.size
    # NASA timestamps never decrease, so start-time order is line order: train < val < test
    assert tr["sample_id"].max() < va["sample_id"].min() and va["sample_id"].max() < te["sample_id"].min()


def test_hash_split_is_seeded_and_order_free() -> None:
    conn = {"sample_id": np.arange(1, 5001) * 7, "start_ts": np.zeros(5000, np.int64)}
    a = logs.assign_splits(conn, "hash", (0.7, 0.15, 0.15), seed=1)
    perm = np.random.default_rng(0).permutation(5000)
    b = logs.assign_splits({k: v[perm] for k, v in conn.items()}, "hash", (0.7, 0.15, 0.15), seed=1)
    c = logs.assign_splits(conn, "hash", (0.7, 0.15, 0.15), seed=2)
    assert np.array_equal(a[perm], b) and not np.array_equal(a, c)
    assert abs((a == 0).mean() - 0.7) < 0.03


def test_mostly_garbage_log_fails_with_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.log"
    path.write_text("\n".join([clf("a", 0)] + ["garbage"] * 9) + "\n")
    with pytest.raises(ShardtrainError, match=r"bad\.log: 9 of 10 lines rejected.*line 2 garbage_line") as e:
        httplog.prepare_http_log(path)
    assert "\n" not in str(e.value)


def test_options_are_validated() -> None:
    with pytest.raises(ShardtrainError, match="dataset.options.long_n"):
        httplog.HttpLogOptions(first_k=5, long_n=4)
    with pytest.raises(ShardtrainError, match="dataset.options.split_rule"):
        httplog.HttpLogOptions(split_rule="random")
    with pytest.raises(ShardtrainError, match="dataset.options.gap_minutes"):
        validate(httplog.HttpLogOptions, {"gap_minutes": 30}, "dataset.options")
    opts = validate(httplog.HttpLogOptions, {"split_fractions": [0.8, 0.1, 0.1]}, "dataset.options")
    assert opts.split_fractions == (0.8, 0.1, 0.1)


def test_min_requests_defaults_to_first_k(tmp_path: Path) -> None:
    path = tmp_path / "small.log"
    lines = [clf("a", 0)] + [clf("b", 10 + i) for i in range(4)] + [clf("c", 20 + i) for i in range(6)]
    path.write_text("\n".join(lines) + "\n")
    base = dict(first_k=5, long_n=5, tail_horizon_seconds=0, split_fractions=(1.0, 0.0, 0.0))
    splits, meta = httplog.prepare_http_log(path, httplog.HttpLogOptions(**base))
    assert splits["train"]["sample_id"].tolist() == [6] and meta["dropped_short"] == 2
    splits, _ = httplog.prepare_http_log(path, httplog.HttpLogOptions(**base, min_requests=1, censor_tail=False))
    assert splits["train"]["sample_id"].tolist() == [1, 2, 6]
    assert splits["train"]["label_long"].tolist() == [0, 0, 1]
