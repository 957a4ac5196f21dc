"""Task of the monthly bill: each specialist's costs against all-fallback, as an artifact and MLflow metrics."""

from __future__ import annotations

import base64
import json

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE

from fleet.core.settings import Settings
from fleet.core.spec import FleetSpec
from fleet.core.storage import put_json
from fleet.labeling import ledger, trust
from fleet.ops import tco
from fleet.stages import registry


def _share(bills: list[tco.SpecialistBill], total: int) -> dict[str, int]:
    """``total`` requests spread over the specialists as their observed traffic is (evenly without any)."""
    seen = sum(b.requests for b in bills)
    if seen == 0:
        return {b.specialist: total // max(len(bills), 1) for b in bills}
    return {b.specialist: round(total * b.requests / seen) for b in bills}


@task(name="tco", cache_policy=NONE)
def monthly_bill(fleet: FleetSpec, settings: Settings, month: str, requests_per_month: int | None, months: int) -> dict:
    """The month's bill per specialist and the projection at ``requests_per_month`` (default: the month's own
    volume), stored (``tco/MONTH.json`` and ``.png``), shown as an artifact and logged to MLflow."""
    store = settings.store_handle()
    bills = []
    for spec in fleet.specialists.values():
        champ = registry.champion_version(spec.name)
        record = registry.decision_record(spec.name, champ) if champ is not None else None
        runs = [tco.TrainingRun(**r) for r in registry.fine_tunes(spec.name)]
        labelling = trust.spent_in_month(store, spec.name, month), ledger.reviews_in_month(store, spec.name, month)
        bills.append(tco.bill(spec, store, month, runs, record, *labelling))
    volume = requests_per_month if requests_per_month is not None else sum(b.requests for b in bills)
    shares = _share(bills, volume)
    projections = [
        p
        for b in bills
        if (p := tco.project(b, fleet.specialists[b.specialist], shares[b.specialist], months)) is not None
    ]
    change = {s.tco.api_price_change_per_year for s in fleet.specialists.values()}
    note = (
        f"{volume:,} requests a month spread as observed; the fallback's price x{'/'.join(f'{c:g}' for c in change)} "
        "a year, compounded monthly"
    )
    md = tco.markdown(bills, projections, note)
    png = tco.figure(projections) if projections else b""
    picture = ""
    if png:
        picture = f"\n![cumulative cost](data:image/png;base64,{base64.b64encode(png).decode()})\n"
        store.put_bytes(f"tco/{month}.png", png)
    result = {"month": month, "requests_per_month": volume, **json.loads(tco.to_json(bills, projections))}
    put_json(store, f"tco/{month}.json", result)
    create_markdown_artifact(key="fleet-tco", markdown=md + picture, description=f"Fleet TCO {month}")
    metrics = {f"{b.specialist}.{k}": v for b in bills for k, v in (b.costs | {"total": b.total}).items()}
    metrics |= {f"{b.specialist}.all_fallback": b.all_fallback for b in bills if b.all_fallback is not None}
    metrics |= {f"{p.specialist}.break_even_month": p.break_even_month for p in projections if p.break_even_month}
    try:
        registry.log_fleet_metrics("fleet-tco", f"tco-{month}", metrics, {f"tco-{month}.png": png} if png else {})
    except registry.RegistryError as exc:
        get_run_logger().warning("TCO not logged to MLflow: %s", exc)
    return result | {"markdown": md}
