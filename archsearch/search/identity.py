"""What identifies a run: the options and resolved values that define it, normalised, so a resume
can tell the same run (under any equivalent spelling) from a different one, in a run folder and on
a shared study."""

from __future__ import annotations

import json
from typing import Any

from ..settings import DEFINING, SCHEDULE_OPTIONS

__all__ = ["RUN_ATTR", "fingerprint", "study_key"]


def fingerprint(record: dict[str, Any]) -> dict[str, Any]:
    """What defines a run, normalised (equivalent spellings compare equal)."""
    opts, res = record.get("options") or {}, record.get("resolved") or {}
    # the schedule options count through the schedule they resolve to: --proxy-img-size 32 and
    # a default that resolves to 32 are the same run
    fp = {k: opts.get(k) for k in DEFINING if k not in SCHEDULE_OPTIONS}
    fp["budget"] = res.get("budget")
    fp["space"] = res.get("space_sha1")
    fp["schedule"] = res.get("schedule")
    data = res.get("proxy_target") or {}
    fp["data"] = {k: data.get(k) for k in ("dataset", "train_images", "val_images", "mean", "std")}
    return fp


#: The study user attribute holding :func:`study_key` in a shared storage.
RUN_ATTR = "archsearch_run"


def study_key(record: dict[str, Any]) -> str:
    """What defines a run, as stored on a shared study: its :func:`fingerprint` but the storage
    URL (the machines sharing it may reach the database by different names)."""
    fp = fingerprint(record)
    fp.pop("storage", None)
    return json.dumps(fp, sort_keys=True)
