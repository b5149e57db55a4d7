"""Reading a run folder's offline W&B logs back without a server (what the tests check W&B with).

It runs the installed wandb's own reader, ``wandb leet inspect --json``, on every ``.wandb`` log of
the run folder (one per start of the run) and merges what they hold.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from cvae.tracking.wandb_files import inspect_log, wandb_files
from cvae.tracking.wandb_run import RUN_ID_FILE

# Summary aggregates W&B writes for ``define_metric(summary=...)``: ``{"max": 14.0}``.
_SUMMARY_AGGS = {"min", "max", "mean", "last", "first", "best"}

_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _number(value: Any) -> Any:
    """leet writes non-finite floats as the strings ``"NaN"``, ``"Infinity"``."""
    return _NON_FINITE.get(value, value) if isinstance(value, str) else value


def _nest_media(item: dict[str, Any]) -> dict[str, Any]:
    """History rows come flat (``"val/sample._type"``, ``"val/sample.path"``): regroup media
    into one dict per key (``{"val/sample": {"_type": "video-file", "path": ...}}``)."""
    media = {k[: -len("._type")] for k in item if k.endswith("._type")}
    row: dict[str, Any] = {}
    for k, v in item.items():
        owner = next((m for m in media if k.startswith(m + ".")), None)
        if owner is None:
            row[k] = _number(v)
        else:
            row.setdefault(owner, {})[k[len(owner) + 1 :]] = v
    return row


def _combine_summary(old: Any, new: Any) -> Any:
    """Merge one key of two consecutive segments' summaries (aggregates over both)."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return new
    if not (old.keys() <= _SUMMARY_AGGS and new.keys() <= _SUMMARY_AGGS):
        return new
    merged = {**old, **new}
    for agg, pick in (("max", max), ("min", min)):
        values = [_number(d[agg]) for d in (old, new) if agg in d]
        values = [v for v in values if isinstance(v, (int, float)) and not math.isnan(v)]
        if values:
            merged[agg] = pick(values)
    if "first" in old:
        merged["first"] = old["first"]
    return merged


def read_offline_run(run_dir: Path) -> dict[str, Any]:
    """Read a run folder's W&B logs back without a server.

    Returns ``run_id``, ``config`` (the last start's config), ``summary`` (merged over every
    start; a single-aggregate value such as ``{"max": 14}`` is given as ``14``), ``history``
    (every row of every start, in order, media regrouped into dicts), ``files`` (the media files
    W&B copied, as absolute paths), ``state`` (``finished``, ``failed``, or ``running`` for a
    run that crashed), ``segments`` (the ``.wandb`` files read, one per start), ``meta``,
    ``artifacts`` and ``preempting`` (see the returned dict).
    """
    run_dir = Path(run_dir)
    id_file = run_dir / RUN_ID_FILE
    run_id = id_file.read_text().strip() if id_file.exists() else None
    paths = wandb_files(run_dir, run_id or None)
    if not paths:
        raise FileNotFoundError(f"no W&B run logs (*.wandb) under {run_dir / 'wandb'}")

    config: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    history: list[dict[str, Any]] = []
    files: list[Path] = []
    artifacts: list[dict[str, Any]] = []
    meta: dict[str, Any] = {}
    preempting = False
    state = None
    for path in paths:
        overview = json.loads(inspect_log(path, summary=True))
        run_id = run_id or overview.get("run_id")
        config = overview.get("config") or config
        state = overview.get("state", state)
        for k, v in (overview.get("summary") or {}).items():
            summary[k] = _combine_summary(summary.get(k), v)
        for line in inspect_log(path, summary=False).splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a torn last record of a crashed run
            kind = record.get("type")
            if kind == "run":
                meta = record["run"]
            elif kind == "artifact":
                artifacts.append(record["artifact"])
            elif kind == "preempting":
                preempting = True
            elif kind == "history":
                history.append(_nest_media(record["history"].get("item", {})))
            elif kind == "files":
                for entry in record["files"].get("files", []):
                    rel = entry.get("path", "")
                    media = path.parent / "files" / rel
                    if rel.startswith("media/") and media.is_file() and media not in files:
                        files.append(media)

    for k, v in summary.items():
        if isinstance(v, dict) and len(v) == 1 and v.keys() <= _SUMMARY_AGGS:
            summary[k] = _number(next(iter(v.values())))
        else:
            summary[k] = _number(v)
    return {
        "run_id": run_id,
        "config": config,
        "summary": summary,
        "history": history,
        "files": files,
        "state": state,
        "segments": paths,
        "meta": meta,  # the last start's run record: display_name, job_type, run_group, tags
        "artifacts": artifacts,  # every logged artifact record: type, name, aliases, metadata (JSON text)
        "preempting": preempting,  # a start was marked preempting (a SIGTERM stop)
    }
