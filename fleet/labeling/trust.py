"""What the flywheel does not take on trust: who sent a text, whether the teacher is still right, and what
asking it costs.

- **Sources.** Every pooled row says who sent its text (``client:NAME`` for a token's name, ``ingest:FILE``,
  ``traffic`` for older logs); :func:`cap_per_source` keeps any one source at or under
  ``labeling.max_share_per_source`` of the teacher rows a retrain adds, so one client flooding the server
  cannot outvote the rest.
- **The teacher, audited.** A random ``labeling.audit_share`` of teacher labels goes to the review queue
  (drawn at labelling time, unpredictable to whoever sends texts); those rows train only once a human
  decided them. :func:`suspended` names the teachers humans disagreed with beyond
  ``labeling.max_teacher_disagreement`` on those rows: their labels stop entering training until further
  reviews bring the share back under.
- **Failures and cost.** Rows the teacher could not label are recorded (``labeling/NAME/failures/``) and
  asked again only after a doubling wait, at most ``labeling.max_attempts`` times; :func:`spent_today` adds
  up the day's labelling runs against ``labeling.max_cost_per_day``.
"""

from __future__ import annotations

import json
import random
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from fleet.core.sections import LabelingSpec
from fleet.core.storage import ObjectStore, StorageError, get_json
from fleet.ops import traffic

_AUDIT = random.SystemRandom()  # not seeded, not predictable from the texts: a sender cannot dodge the audit


def draw_audit(share: float) -> bool:
    return share > 0 and _AUDIT.random() < share


def cap_per_source(rows: pd.DataFrame, share: float) -> pd.DataFrame:
    """``rows`` (with ``id`` and ``origin``) with each source's rows cut so that none makes up more than ``share``
    of what is kept: the largest per-source count ``k`` with ``k <= share * sum(min(count, k))``. Which rows of a
    source are kept goes by row id (a hash of the text), not by arrival."""
    if share >= 1 or rows.empty:
        return rows
    origin = rows["origin"].fillna("").astype(str).replace("", "unknown")
    counts = origin.value_counts().to_numpy(dtype=int)
    k = next((k for k in range(int(counts.max()), 0, -1) if k <= share * int(np.minimum(counts, k).sum())), 0)
    order = rows.assign(_origin=origin).sort_values("id", kind="stable")
    return order.groupby("_origin", sort=False).head(k).drop(columns="_origin").sort_index()


def audit_standing(current: pd.DataFrame) -> pd.DataFrame:
    """Per teacher (``teacher_by``): audited rows a human decided, and the share where the human disagreed."""
    if current.empty:
        return pd.DataFrame(columns=pd.Index(["teacher_by", "reviewed", "disagreement"]))
    audited = current[
        current["audit"].fillna(False).astype(bool) & (current["human_source"] == "human") & current["teacher"].notna()
    ]
    differs = (audited["human"] != audited["teacher"]).astype(float)
    grouped = differs.groupby(audited["teacher_by"])
    return pd.DataFrame({"reviewed": grouped.size(), "disagreement": grouped.mean()}).reset_index()


def suspended(current: pd.DataFrame, spec: LabelingSpec) -> dict[str, str]:
    """Teachers whose labels do not enter training now -> why."""
    out = {}
    standing = audit_standing(current)
    for by, reviewed, share in zip(standing["teacher_by"], standing["reviewed"], standing["disagreement"]):
        if int(reviewed) >= spec.audit_min_reviews and float(share) > spec.max_teacher_disagreement:
            out[str(by)] = (
                f"humans disagreed with {float(share):.0%} of {int(reviewed)} audited labels "
                f"(at most {spec.max_teacher_disagreement:.0%}); its labels wait until reviews bring that under"
            )
    return out


# ------------------------------------------------------------------------------------------------- failures
def _failures_prefix(name: str) -> str:
    return f"labeling/{name}/failures"


def record_failures(store: ObjectStore, name: str, failed: dict[str, str]) -> None:
    """Store this batch's failures (row id -> problem) as one part."""
    if not failed:
        return
    now = datetime.now(UTC)
    lines = [json.dumps({"id": rid, "at": now.isoformat(), "problem": p[:200]}) for rid, p in failed.items()]
    store.put_bytes(
        f"{_failures_prefix(name)}/part-{now:%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}.jsonl", "\n".join(lines).encode()
    )


def failures(store: ObjectStore, name: str) -> pd.DataFrame:
    """Per row id: how often the teacher failed it (``tries``) and when last (``last``)."""
    rows = [r for key in store.list(_failures_prefix(name)) for r in traffic.read_part(store, key)]
    if not rows:
        return pd.DataFrame(columns=pd.Index(["id", "tries", "last"]))
    df = pd.DataFrame(rows)
    df["at"] = pd.to_datetime(df["at"], utc=True)
    return df.groupby("id").agg(tries=("at", "size"), last=("at", "max")).reset_index()


def waiting(fails: pd.DataFrame, spec: LabelingSpec, now: datetime | None = None) -> tuple[set[str], set[str]]:
    """(ids given up after ``max_attempts``, ids still inside their doubling wait)."""
    now = now or datetime.now(UTC)
    given_up: set[str] = set()
    backing_off: set[str] = set()
    for rid, tries, last in zip(fails["id"], fails["tries"], fails["last"]):
        if int(tries) >= spec.max_attempts:
            given_up.add(str(rid))
        elif pd.Timestamp(last) + timedelta(hours=spec.retry_after_hours * 2 ** (int(tries) - 1)) > now:
            backing_off.add(str(rid))
    return given_up, backing_off


# ----------------------------------------------------------------------------------------------------- cost
def runs_prefix(name: str) -> str:
    return f"labeling/{name}/runs"


def spent_today(store: ObjectStore, name: str, now: datetime | None = None) -> float:
    """What the teacher's runs of this UTC day cost (their stored accounts)."""
    day = (now or datetime.now(UTC)).strftime("%Y%m%d")
    total = 0.0
    for key in store.list(f"{runs_prefix(name)}/{day}"):
        try:
            total += float(get_json(store, key).get("cost", 0.0))
        except (StorageError, ValueError, AttributeError, TypeError):
            continue  # an unreadable account does not stop labelling; its run was counted when it ran
    return total


def spent_in_month(store: ObjectStore, name: str, month: str) -> float:
    """What the teacher's runs of a calendar month (``YYYY-MM``, UTC) cost (their stored accounts)."""
    day_prefix = month.replace("-", "")
    total = 0.0
    for key in store.list(runs_prefix(name)):
        if key.split("/")[-2].startswith(day_prefix):
            try:
                total += float(get_json(store, key).get("cost", 0.0))
            except (StorageError, ValueError, AttributeError, TypeError):
                continue
    return total
