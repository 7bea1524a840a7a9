"""The control socket's ``offsite_status`` answer (the web page reads the same): the uploader's
last pass, each archive's copy with the offsite verify's damaged ones marked, and the lag."""

from __future__ import annotations

from typing import Any

from backup_sidecar import jobs
from backup_sidecar.service.health import HealthState
from backup_sidecar.service.offsite import OffsiteUploader


def offsite_status(
    uploader: OffsiteUploader, rt: jobs.Runtime, health: HealthState
) -> dict[str, Any]:
    """The OffsiteStatusResult (control/results.py) of the uploader now."""
    spec = rt.offsite
    answer = uploader.state.as_json(
        configured=spec is not None, url=spec.url if spec else None, now=rt.clock().timestamp()
    )
    damaged = uploader.verifier.damaged() if uploader.verifier is not None else {}
    for copy in answer["copies"].values():
        if copy["state"] == "confirmed" and copy["object"] in damaged:
            copy["state"], copy["detail"] = "damaged", damaged[copy["object"]]
    answer["lagging"] = list(health.current().offsite_lagging) if spec is not None else []
    return answer
