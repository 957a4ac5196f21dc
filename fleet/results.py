"""Outcomes of a fleet run."""


class FleetRunError(RuntimeError):
    """Some specialists failed; ``results`` has a row per specialist, failures with their error."""

    def __init__(self, results: list[dict]):
        self.results = results
        failed = [f"{r['specialist']}: {r.get('error')}" for r in results if r["status"] == "failed"]
        super().__init__(f"{len(failed)} of {len(results)} specialist(s) failed:\n" + "\n".join(failed))
