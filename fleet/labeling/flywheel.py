"""The flywheel's steps for one specialist, over the pool, the ledger and the champion.

Each function is one thing a user (or the ``label`` flow) does: build the pool, answer it with the champion
(cached per champion version, so a row is answered once), teacher-label what is unlabelled, rank the review
queue, record review decisions, and gather the rows a retrain adds to the training split.
"""

from __future__ import annotations

import json
import tempfile
import uuid
from dataclasses import dataclass

import pandas as pd

from fleet.core import leases
from fleet.core.spec import SpecialistSpec
from fleet.core.storage import ObjectStore, StorageError, get_json, put_json
from fleet.data import versions
from fleet.data.cleaning import Cleaner, Quarantine, Verdict
from fleet.kinds import kind_of
from fleet.labeling import audit, ledger, pool, queue, teacher, trust
from fleet.labeling.ledger import LabelingError
from fleet.ops import traffic
from fleet.stages import registry

ANSWER_COLUMNS = ["id", "specialist", "specialist_confidence", "uncertainty"]


@dataclass
class Champion:
    version: str
    dataset_version: str


def champion(spec: SpecialistSpec) -> Champion:
    champ = registry.champion_version(spec.name)
    if champ is None:
        raise LabelingError(f"{spec.name}: no champion yet; run `fleet run --only {spec.name}` first")
    return Champion(str(champ.version), (champ.tags or {}).get("dataset_version", ""))


@dataclass
class State:
    """What the flywheel's steps read: the champion, the pool's rows (kept out of its dataset) and the labels."""

    champion: Champion
    rows: pd.DataFrame  # pool.POOL_COLUMNS
    labels: pd.DataFrame  # ledger.current
    batches: frozenset[str] = frozenset()  # the ledger's batch names (an imported file's is its hash)


def state(spec: SpecialistSpec, store: ObjectStore) -> State:
    champ = champion(spec)
    rows = pool.build(spec, store, champ.dataset_version).rows
    events = ledger.events(store, spec.name)
    return State(champ, rows, ledger.current(events), frozenset(events["batch"].dropna().astype(str)))


def _answers_prefix(name: str, version: str) -> str:
    return f"labeling/{name}/answers/v{version}"


def champion_answers(spec: SpecialistSpec, store: ObjectStore, champ: Champion, rows: pd.DataFrame) -> pd.DataFrame:
    """The champion's answer, confidence and uncertainty on each row; rows answered before are not answered again."""
    prefix = _answers_prefix(spec.name, champ.version)
    known = [
        json.loads(line)
        for key in store.list(prefix)
        for line in store.get_bytes(key).decode().split("\n")
        if line.strip()
    ]
    have = pd.DataFrame(known, columns=pd.Index(ANSWER_COLUMNS)).drop_duplicates("id", keep="last")
    todo = rows[~rows["id"].isin(set(have["id"]))]
    if len(todo):
        kind = kind_of(spec)
        with tempfile.TemporaryDirectory(prefix="fleet-pool-") as tmp:
            model = kind.load(registry.download_model_dir(spec.name, champ.version, tmp), "champion", spec)
            out = model.predict(todo["text"].tolist())
        probs = out.probabilities
        new = pd.DataFrame(
            {
                "id": todo["id"].tolist(),
                "specialist": out.predictions,
                "specialist_confidence": [max(p) for p in probs] if probs else [None] * len(todo),
                "uncertainty": queue.uncertainty(probs, len(todo)),
            }
        )
        store.put_bytes(f"{prefix}/part-{uuid.uuid4().hex[:12]}.jsonl", versions.to_jsonl(new))
        have = pd.concat([have, new], ignore_index=True) if len(have) else new
    return have


def review_queue(
    spec: SpecialistSpec, store: ObjectStore, st: State | None = None, batch: int | None = None
) -> pd.DataFrame:
    """Every row awaiting a human decision, most useful first (columns: ``queue.QUEUE_COLUMNS`` and ``reason``),
    the first ``batch`` (default ``labeling.review_size``) picked for variety (``queue.diversify``); ``st``: the
    flywheel's state when the caller has read it already."""
    st = st or state(spec, store)
    answers = (
        champion_answers(spec, store, st.champion, st.rows) if len(st.rows) else pd.DataFrame(columns=ANSWER_COLUMNS)
    )
    ranked = queue.rank(st.rows, answers, st.labels, audit.flagged_for_review(store, spec.name))
    return queue.diversify(ranked, batch or spec.labeling.review_size)


def unlabelled(st: State, store: ObjectStore | None = None, spec: SpecialistSpec | None = None) -> pd.DataFrame:
    """Pooled rows with neither a teacher label nor a human decision, oldest first; with ``store`` and ``spec``,
    without the rows the teacher failed ``labeling.max_attempts`` times or that wait after a failure."""
    done = set(st.labels["id"]) if len(st.labels) else set()
    if store is not None and spec is not None:
        given_up, backing_off = trust.waiting(trust.failures(store, spec.name), spec.labeling)
        done |= given_up | backing_off
    return st.rows[~st.rows["id"].isin(done)].sort_values("first_seen", kind="stable").reset_index(drop=True)


def teacher_label(spec: SpecialistSpec, store: ObjectStore, progress: bool = False) -> teacher.TeacherRun:
    """Teacher labels for up to ``labeling.max_rows_per_run`` unlabelled pooled rows, under the
    ``label/NAME`` lease (two runs never label the same rows), within what is left of the day's budget."""
    try:
        with leases.held(store, f"label/{spec.name}", wait_s=0, ttl_s=600):
            st = state(spec, store)
            rows = unlabelled(st, store, spec).head(spec.labeling.max_rows_per_run)
            limit = spec.labeling.max_cost_per_day
            budget = None if limit is None else limit - trust.spent_today(store, spec.name)
            train = versions.load_split(store, spec.name, st.champion.dataset_version, "train")
            t = teacher.build(spec, train)
            run = teacher.label(spec, store, t, rows, progress=progress, budget=budget)
            run.given_up = len(trust.waiting(trust.failures(store, spec.name), spec.labeling)[0])
            return run
    except leases.LeaseBusy as exc:
        raise LabelingError(f"{spec.name}: another labelling run is going on ({exc}); nothing was asked") from None


FALLBACK_READ = "labeling/{name}/fallback-read.json"  # the traffic parts whose fallback answers were taken


def _fallback_answers(store: ObjectStore, name: str, target: str) -> tuple[pd.DataFrame, list[str]]:
    """The fallback's answers in traffic parts not read before: (text, answer, origin) rows, and every part."""
    key = FALLBACK_READ.format(name=name)
    parts = traffic.part_keys(store, "traffic", name)
    try:
        done = set(get_json(store, key)) if store.exists(key) else set()
    except (StorageError, ValueError, TypeError):
        done = set()
    rows = [
        {"text": r["text"], target: r["fallback_answer"], "origin": pool.origin_of(r)}
        for part in parts
        if part not in done
        for r in traffic.read_part(store, part)
        if r.get("answered_by") == "fallback"
        and isinstance(r.get("fallback_answer"), str)
        and isinstance(r.get("text"), str)
    ]
    return pd.DataFrame(rows, columns=pd.Index(["text", target, "origin"])), parts


def learn_from_fallback(spec: SpecialistSpec, store: ObjectStore) -> int:
    """The fallback's answers to escalated requests, as teacher labels (by ``fallback:NAME``) of their pooled
    rows: the next retrain learns where the specialist was unsure. The flywheel's rules hold: only rows of the
    pool (cleaned, not in the dataset, no near-duplicate of a held-out row), an answer the kind accepts as a
    target (a label of the set...), a random ``labeling.audit_share`` drawn for review, and the per-source cap
    and the teacher audit at training. A row a human or a teacher labelled already is left as it is. Returns
    the labels recorded."""
    kind = kind_of(spec)
    answers, parts = _fallback_answers(store, spec.name, kind.target)
    if answers.empty:
        if parts:
            put_json(store, FALLBACK_READ.format(name=spec.name), parts)
        return 0
    st = state(spec, store)
    by_text = dict(zip(st.rows["text"], st.rows["id"]))
    labelled = set(st.labels["id"]) if len(st.labels) else set()
    check = kind.target_check(spec)
    fb = spec.serving.fallback
    who = f"fallback:{(fb.name or fb.kind + ' ' + (fb.model or '')) if fb else 'unknown'}"
    cleaner = Cleaner(spec.curation, lambda text, target: Verdict(target), Quarantine(kind.target))
    events: dict[str, ledger.LabelEvent] = {}
    for i, (text, answer, origin) in enumerate(zip(answers["text"], answers[kind.target], answers["origin"])):
        rec = cleaner.row(i, text, "")
        rid = None if rec is None else by_text.get(rec["text"])
        if rec is None or rid is None or rid in labelled or rid in events:
            continue
        verdict = check(rec["text"], str(answer))
        if verdict.rule is not None:
            continue
        audit = trust.draw_audit(spec.labeling.audit_share)
        events[rid] = ledger.LabelEvent(
            rid, rec["text"], verdict.value, "teacher", who, confidence=1.0, origin=str(origin), audit=audit
        )
    ledger.record(store, spec.name, list(events.values()))
    put_json(store, FALLBACK_READ.format(name=spec.name), parts)  # after the labels: a crash reads them again
    return len(events)


def decide(store: ObjectStore, name: str, rid: str, text: str, label: str | None, reviewer: str) -> None:
    """One review decision (``label`` None: skipped), stored at once so a review can stop and resume anywhere."""
    source = "skip" if label is None else "human"
    ledger.record(store, name, [ledger.LabelEvent(rid, text, label, source, reviewer)])


def reviewable(st: State, store: ObjectStore, name: str) -> dict[str, str]:
    """Ids a human may label -> text: the pool and the audited training rows."""
    known = dict(zip(st.rows["id"], st.rows["text"]))
    flagged = audit.flagged(store, name)
    if flagged is not None:
        known.update(zip(flagged["id"], flagged["text"]))
    return known


def import_review(spec: SpecialistSpec, store: ObjectStore, payload: bytes, source: str) -> queue.Imported:
    """Apply a Label Studio export: checked whole, refused if this exact file was applied before.

    The labels are stored first (as one batch named by the file's hash), the file marked imported after: a
    crash in between leaves the file importable again, and that import finds its batch stored and only marks it."""
    st = state(spec, store)
    current = {}
    if len(st.labels):
        humans = st.labels[st.labels["human_source"] == "human"]
        current = {rid: (label, str(at)) for rid, label, at in zip(humans["id"], humans["human"], humans["human_at"])}
    got = queue.import_label_studio(
        spec.name, payload, source, kind_of(spec).labels(spec), reviewable(st, store, spec.name), current
    )
    marker = ledger.import_marker(spec.name, payload)
    if store.exists(marker):
        raise LabelingError(f"{source}: this file was imported before; nothing applied")
    batch = ledger.import_batch(payload)
    if batch not in st.batches:
        ledger.record(store, spec.name, got.events, batch=batch)
    ledger.claim_import(store, spec.name, payload, {"source": source, "rows": len(got.events)})
    return got


def training_rows(spec: SpecialistSpec, store: ObjectStore) -> pd.DataFrame:
    """Rows a retrain adds to the training split: human labels, and teacher labels at or above
    ``labeling.min_confidence`` on rows no human decided, but not those drawn for audit (they wait for a
    human), not those of a teacher humans disagree with (``trust.suspended``), and no one source above
    ``labeling.max_share_per_source`` of them. Columns: text, the target, label_source, labeled_by, labeled_at."""
    target = kind_of(spec).target
    cols = ["text", target, "label_source", "labeled_by", "labeled_at"]
    cur = ledger.current(ledger.events(store, spec.name))
    if cur.empty:
        return pd.DataFrame(columns=pd.Index(cols))
    human = cur[cur["human_source"] == "human"]
    sure = cur["teacher_confidence"].astype(float) >= spec.labeling.min_confidence
    held = cur["audit"].fillna(False).astype(bool) | cur["teacher_by"].isin(set(trust.suspended(cur, spec.labeling)))
    taught = cur[cur["human_source"].isna() & cur["teacher"].notna() & sure & ~held]
    taught = trust.cap_per_source(taught, spec.labeling.max_share_per_source)
    parts = [
        pd.DataFrame(
            {"text": human["text"], target: human["human"], "label_source": "human"}
            | {"labeled_by": human["human_by"], "labeled_at": human["human_at"]}
        ),
        pd.DataFrame(
            {"text": taught["text"], target: taught["teacher"], "label_source": "teacher"}
            | {"labeled_by": taught["teacher_by"], "labeled_at": taught["teacher_at"]}
        ),
    ]
    return pd.concat([p for p in parts if len(p)] or [pd.DataFrame(columns=pd.Index(cols))], ignore_index=True)


def summary(spec: SpecialistSpec, store: ObjectStore, st: State | None = None) -> dict[str, int]:
    """Counts for ``fleet status``: pool, awaiting the teacher (not the rows it failed and that wait or were
    given up: those are ``teacher_given_up`` and not asked again), review queue, human and teacher labels, and
    teachers suspended by the audit."""
    st = st or state(spec, store)
    rows, cur = st.rows, st.labels
    decided = set(cur.loc[cur["human_source"].notna(), "id"]) if len(cur) else set()
    taught = set(cur.loc[cur["teacher"].notna(), "id"]) if len(cur) else set()
    ids = set(rows["id"])
    flagged = audit.flagged_for_review(store, spec.name)
    audit_open = 0 if flagged is None else len(set(flagged["id"]) - decided)
    given_up, backing_off = trust.waiting(trust.failures(store, spec.name), spec.labeling)
    return {
        "pool": len(ids),
        "awaiting_teacher": len(ids - decided - taught - given_up - backing_off),
        "teacher_given_up": len(ids & given_up - taught),
        "review_queue": len(ids - decided) + audit_open,
        "human_labels": int((cur["human_source"] == "human").sum()) if len(cur) else 0,
        "teacher_labels": len(taught),
        "teachers_suspended": len(trust.suspended(cur, spec.labeling)) if len(cur) else 0,
    }
