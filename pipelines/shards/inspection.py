"""``shardtrain inspect``: rows, shards, schema, labels and class counts of a shard directory.

The directory may be a local path or a URI (``s3://...``); the report names it without
credentials, and ``verify`` streams and re-hashes each remote shard.
"""

from __future__ import annotations

from typing import Any

from shardtrain.core.errors import ShardtrainError
from shardtrain.shards import storage
from shardtrain.shards.reader import read_index, verify_shards


def describe(directory: storage.Location, verify: bool = False) -> dict[str, Any]:
    """A JSON-ready summary of a split directory or URI; ``problems`` lists verification failures."""
    shown = storage.redact(directory)
    try:
        index = read_index(directory)
    except ShardtrainError as exc:
        return {"dir": shown, "problems": [str(exc)]}
    labels = {}
    for col, desc in index.get("labels", {}).items():
        classes = desc.get("classes")
        counts = desc.get("counts", {})
        named = {(classes[int(k)] if classes and 0 <= int(k) < len(classes) else k): v
                 for k, v in counts.items()}
        labels[col] = {"classes": classes, "counts": named}
    report = {
        "dir": shown,
        "format": index["format"],
        "version": index["version"],
        "stage": index.get("stage"),
        "dataset": index.get("dataset"),
        "split": index.get("split"),
        "rows": index["rows"],
        "shards": len(index.get("shards", [])),
        "bytes": sum(s["bytes"] for s in index.get("shards", [])),
        "schema": index.get("schema", []),
        "features": index.get("features", {}),
        "labels": labels,
        "rejects": index.get("rejects", {}),
        "fingerprint": index.get("fingerprint"),
    }
    if verify:
        report["problems"] = verify_shards(directory)
        report["verified"] = not report["problems"]
    return report


def format_text(report: dict[str, Any]) -> str:
    """Human-readable form of ``describe``'s report."""
    if "format" not in report:
        return "\n".join(f"FAILED: {p}" for p in report["problems"])
    lines = [
        f"{report['dir']}: {report['dataset']} / {report['stage']} / {report['split']}",
        f"  format   {report['format']} v{report['version']}",
        f"  rows     {report['rows']:,} in {report['shards']} shard(s), {report['bytes']:,} bytes",
        "  schema   " + ", ".join(f"{c['name']}: {c['type']}" for c in report["schema"]),
    ]
    for name, feat in report["features"].items():
        lines.append(f"  feature  {name}: " + ", ".join(f"{k}={v}" for k, v in feat.items() if k != "names"))
    for col, desc in report["labels"].items():
        counts = ", ".join(f"{k}: {v:,}" for k, v in desc["counts"].items())
        lines.append(f"  labels   {col}: {counts}")
    rej = report.get("rejects") or {}
    if rej.get("count"):
        lines.append(f"  rejects  {rej['count']:,} ({rej.get('reasons')}) in {rej.get('file')}")
    if "problems" in report:
        if report["problems"]:
            lines += [f"  FAILED   {p}" for p in report["problems"]]
        else:
            lines.append("  verified every shard's sha256: OK")
    return "\n".join(lines)
