"""The review queue: pooled rows ranked by how much a human label would help, and its exchange formats.

A row's priority adds up what makes a human label worth having:

- the specialist's uncertainty: the normalized entropy of its label distribution (0 sure .. 1 no idea);
- teacher/specialist disagreement: the teacher's confidence when the two answer differently, weighted by how
  much more often the teacher than the specialist was right on the rows humans labelled (``teacher_weight``,
  the lower end of its interval): a teacher not shown to be better than the specialist adds nothing;
- for rows already in the training data that ``fleet audit`` flagged: one minus cleanlab's label quality;
- teacher labels drawn for audit (``labeling.audit_share``) come first, whatever else they score.

Rows a human already decided (labelled or skipped) leave the queue. ``diversify`` then picks the batch a
human sees first for variety among the most useful rows (TF-IDF k-means). ``export_label_studio`` writes the top
rows as Label Studio tasks (the teacher's answer as a pre-annotation); ``import_label_studio`` reads Label
Studio's JSON export back, refusing the whole file, with one line naming the row, when any row is wrong.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fleet.labeling.ledger import LabelEvent, LabelingError

AUDIT_PRIORITY = 2.0  # above any uncertainty + disagreement (each at most 1)
QUEUE_COLUMNS = ["id", "text", "priority", "specialist", "specialist_confidence", "teacher", "teacher_confidence"]


def uncertainty(probabilities: list[list[float]] | None, n: int) -> np.ndarray:
    """Normalized entropy per row (0.5 where the model gives no distribution)."""
    if probabilities is None:
        return np.full(n, 0.5)
    p = np.clip(np.asarray(probabilities, dtype=float), 1e-12, 1.0)
    k = p.shape[1]
    return -(p * np.log(p)).sum(axis=1) / math.log(k) if k > 1 else np.zeros(len(p))


def teacher_weight(answers: pd.DataFrame, labels: pd.DataFrame) -> float:
    """How much the teacher's disagreement counts: on the rows a human labelled (the specialist answered them
    before their label was known), how much more often the teacher than the specialist was right, at the
    lower end of its 95% interval (paired), at least 0; 0 before any evidence.

    The lower bound, not the difference itself: the rows humans label are the ones the specialist was least
    sure of, where a weak teacher can look better than the specialist by chance; a teacher's disagreement is
    worth a human's time once it has shown it more than once."""
    if not len(labels) or not len(answers):
        return 0.0
    humans = labels[(labels["human_source"] == "human") & labels["teacher"].notna()]
    judged = humans.merge(answers[["id", "specialist"]], on="id")
    if len(judged) < 2:
        return 0.0
    teacher = (judged["teacher"] == judged["human"]).to_numpy(dtype=float)
    specialist = (judged["specialist"] == judged["human"]).to_numpy(dtype=float)
    d: np.ndarray = teacher - specialist
    return max(0.0, float(d.mean() - 1.96 * d.std(ddof=1) / math.sqrt(len(d))))


def rank(pool: pd.DataFrame, answers: pd.DataFrame, labels: pd.DataFrame, flagged: pd.DataFrame | None = None):
    """The queue, most useful first.

    ``pool``: id, text. ``answers``: the champion's answers on the pool (id, specialist, specialist_confidence,
    uncertainty). ``labels``: ``ledger.current``. ``flagged``: audited training rows (id, text, given, suggested,
    quality), or None."""
    weight = teacher_weight(answers, labels)
    q = pool[["id", "text"]].merge(answers, on="id", how="left")
    teacher = labels[["id", "teacher", "teacher_confidence"]] if len(labels) else None
    if teacher is not None:
        q = q.merge(teacher, on="id", how="left")
    else:
        q = q.assign(teacher=None, teacher_confidence=np.nan)
    q["uncertainty"] = q["uncertainty"].fillna(0.5)
    differs = q["teacher"].notna() & q["specialist"].notna() & (q["teacher"] != q["specialist"])
    q["disagreement"] = np.where(differs, weight * q["teacher_confidence"].fillna(0.5).astype(float), 0.0)
    q["priority"] = q["uncertainty"] + q["disagreement"]
    q["reason"] = [_reason(r) for r in q.itertuples()]
    audited = q["id"].isin(set(labels.loc[labels["audit"].fillna(False).astype(bool), "id"])) if len(labels) else None
    if audited is not None and audited.any():  # the teacher's random audit sample comes first (trust module)
        q.loc[audited, "priority"] += AUDIT_PRIORITY
        q.loc[audited, "reason"] = [f"teacher audit: is {t!r} right?" for t in q.loc[audited, "teacher"]]
    if flagged is not None and len(flagged):
        audit = pd.DataFrame(
            {
                "id": flagged["id"],
                "text": flagged["text"],
                "priority": 1.0 - flagged["quality"].astype(float),
                "specialist": flagged["suggested"],
                "teacher": None,
                "reason": [
                    f"label issue: labelled {g}, looks like {s}" for g, s in zip(flagged["given"], flagged["suggested"])
                ],
            }
        )
        q = pd.concat([q, audit[~audit["id"].isin(q["id"])]], ignore_index=True)
    decided = set(labels.loc[labels["human_source"].notna(), "id"]) if len(labels) else set()
    q = q[~q["id"].isin(decided)]
    return q.sort_values(["priority", "id"], ascending=[False, True]).reset_index(drop=True)


def diversify(q: pd.DataFrame, n: int, factor: int = 5, most: int = 200) -> pd.DataFrame:
    """The queue with its first ``n`` rows (at most ``most``) chosen for variety from its top ``factor * n``:
    k-means (k = ``n``) over the TF-IDF vectors of their texts, weighted by priority, and the row nearest each
    centre; the rest keep their order. Ranking alone puts near-identical uncertain rows side by side (ten ways
    of saying "call now to claim"), and a human's ten labels then teach what one would have."""
    q = q.reset_index(drop=True)
    n = min(n, most)
    top = q.head(factor * n)
    if n < 2 or len(top) <= n:
        return q
    from sklearn.cluster import KMeans
    from sklearn.feature_extraction.text import TfidfVectorizer

    try:
        z = TfidfVectorizer(sublinear_tf=True).fit_transform(top["text"].fillna("").astype(str))
    except ValueError:  # no word in any text: nothing to tell them apart by
        return q
    weight = top["priority"].astype(float).clip(lower=1e-6).to_numpy()
    with warnings.catch_warnings():  # fewer distinct texts than centres: some clusters stay empty
        warnings.simplefilter("ignore")
        km = KMeans(n, n_init=1, random_state=0).fit(z, sample_weight=weight)
    distance = km.transform(z)  # rows x centres
    chosen = []
    for c in range(n):
        members = np.flatnonzero(km.labels_ == c)
        if len(members):
            chosen.append(int(members[np.argmin(distance[members, c])]))
    picked = top.iloc[sorted(chosen)]  # in the queue's order: most useful first
    return pd.concat([picked, q.drop(index=picked.index)]).reset_index(drop=True)


def _reason(r) -> str:
    parts = []
    if r.uncertainty >= 0.5:
        parts.append(f"specialist unsure ({r.uncertainty:.2f})")
    if r.disagreement > 0 and isinstance(r.teacher, str):
        parts.append(f"teacher says {r.teacher} ({r.teacher_confidence:.2f}), specialist {r.specialist}")
    return "; ".join(parts) or "least certain left"


# ---------------------------------------------------------------------------------------------- Label Studio
def label_config(labels: list[str]) -> str:
    """The Label Studio labelling interface for these tasks (choices, or a text area for open answers)."""
    if labels:
        choices = "".join(f'<Choice value="{lab}"/>' for lab in labels)
        control = f'<Choices name="label" toName="text" choice="single">{choices}</Choices>'
    else:
        control = '<TextArea name="label" toName="text" maxSubmissions="1"/>'
    return f'<View><Text name="text" value="$text"/>{control}</View>'


def export_label_studio(name: str, queue: pd.DataFrame, labels: list[str]) -> list[dict]:
    """Label Studio tasks for the queue's rows, with the teacher's answer (or the specialist's) pre-filled."""
    tasks = []
    for r in queue.to_dict("records"):
        guess, by, score = r.get("teacher"), "teacher", r.get("teacher_confidence")
        if not isinstance(guess, str):
            guess, by, score = r.get("specialist"), "specialist", r.get("specialist_confidence")
        task: dict = {"data": {"text": r["text"], "fleet_id": r["id"], "specialist": name, "reason": r["reason"]}}
        if isinstance(guess, str):
            value = {"choices": [guess]} if labels else {"text": [guess]}
            task["predictions"] = [
                {
                    "model_version": by,
                    "score": float(score) if isinstance(score, float | int) and score == score else None,
                    "result": [
                        {
                            "from_name": "label",
                            "to_name": "text",
                            "type": "choices" if labels else "textarea",
                            "value": value,
                        }
                    ],
                }
            ]
        tasks.append(task)
    return tasks


@dataclass
class Imported:
    events: list[LabelEvent]
    unannotated: int
    unchanged: int
    stale: int = 0  # answers older than the row's current human decision: not applied over it


def _answer(task: dict, where: str, labels: list[str]) -> tuple[str, str, str] | None:
    """(label, by, at) of a task's latest submitted annotation, or None when it has none."""
    notes = [a for a in task.get("annotations") or [] if isinstance(a, dict) and not a.get("was_cancelled")]
    if not notes:
        return None
    note = notes[-1]
    values = []
    for res in note.get("result") or []:
        value = res.get("value") if isinstance(res, dict) else None
        if isinstance(value, dict) and (v := value.get("choices") or value.get("text")):
            values.append(v)
    if not values or not isinstance(values[0], list) or len(values[0]) != 1:
        raise LabelingError(f"{where}: its annotation has no single answer (choices or text)")
    label = str(values[0][0]).strip()
    if labels and label not in labels:
        raise LabelingError(f"{where}: label {label!r} is not one of {', '.join(labels)}")
    if not label:
        raise LabelingError(f"{where}: the answer is empty")
    who = note.get("completed_by")
    who = who.get("email") or who.get("id") if isinstance(who, dict) else who
    return (
        label,
        f"label-studio:{who if who is not None else 'unknown'}",
        str(note.get("updated_at") or note.get("created_at") or ""),
    )


def _older(answered_at: str, decided_at: str) -> bool:
    """The annotation is not shown to be newer than the decision already recorded (no time: not shown)."""
    try:
        return _utc(answered_at) <= _utc(decided_at)
    except (ValueError, TypeError):
        return True


def _utc(when: str) -> pd.Timestamp:
    t = pd.Timestamp(when)
    if pd.isna(t):
        raise ValueError("no time")
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


def import_label_studio(
    name: str,
    payload: bytes,
    source: str,
    labels: list[str],
    known: dict[str, str],
    current: dict[str, tuple[str, str]],
) -> Imported:
    """Label Studio's JSON export, checked whole before anything is applied.

    ``known``: the ids a human may label (queue, pool, audited rows) -> their text; ``current``: id -> its
    current human (label, time): an identical label is not applied again, and an answer not newer than the
    current decision is stale (an older export imported late does not undo a later decision)."""
    try:
        tasks = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LabelingError(f"{source}: not a JSON file ({exc})") from None
    if not isinstance(tasks, list):
        raise LabelingError(f"{source}: expected Label Studio's JSON export (a list of tasks)")
    out, skipped, unchanged, stale = [], 0, 0, 0
    for i, task in enumerate(tasks, start=1):
        data = task.get("data") if isinstance(task, dict) else None
        rid = data.get("fleet_id") if isinstance(data, dict) else None
        where = f"{source}: task {i}" + (f" (fleet_id {rid})" if isinstance(rid, str) and rid else "")
        if not isinstance(data, dict) or not isinstance(rid, str) or not rid:
            raise LabelingError(f"{where}: has no data.fleet_id string (not a task `fleet review --export` wrote)")
        if data.get("specialist") != name:
            raise LabelingError(f"{where}: belongs to specialist {data.get('specialist')!r}, not {name}")
        if rid not in known:
            raise LabelingError(f"{where}: unknown id (not in {name}'s pool or audit)")
        got, now = _answer(task, where, labels), current.get(rid)
        if got is None:
            skipped += 1
        elif now is not None and now[0] == got[0]:
            unchanged += 1
        elif now is not None and _older(got[2], now[1]):
            stale += 1
        else:
            out.append(LabelEvent(rid, known[rid], got[0], "human", got[1], at=got[2]))
    return Imported(out, skipped, unchanged, stale)
