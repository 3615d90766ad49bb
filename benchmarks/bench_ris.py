"""Time to build and send one study result's RIS messages (not a test).

Builds the HL7 v2.5.1 ORU^R01 (hl7apy, strict) and the FHIR transaction Bundle (fhir.resources)
of one study result, and sends each to the loopback test receivers of ``tests.harness.ris`` (the
MLLP listener parses every message strictly, the FHIR endpoint validates every Bundle), reporting
the median of ``--runs``. Usage (figures in docs/ris.md)::

    .venv/bin/python benchmarks/bench_ris.py --runs 50
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ris import fhir, fhir_http, hl7, mllp  # noqa: E402
from ris.outcome import ImageOutcome, StudyOutcome  # noqa: E402
from tests.harness.ris import FhirReceiver, MllpReceiver  # noqa: E402

OUTCOME = StudyOutcome(
    study_instance_uid="1.2.826.0.1.3680043.8.498.1",
    accession_number="ACC0042",
    patient_id="PAT-7731",
    patient_name="Doe^Jane",
    patient_birth_date="19650412",
    patient_sex="F",
    finding="present",
    probability=0.7231,
    threshold=0.4,
    operating_point="clinical",
    model_version="bench",
    images=(
        ImageOutcome(
            "1.2.826.0.1.3680043.8.498.2", "1.2.826.0.1.3680043.8.498.3", "present", 0.72, None
        ),
    ),
    sr_sop_instance_uid="1.2.826.0.1.3680043.8.498.10",
    kos_sop_instance_uid=None,
    replaces_sr_sop_instance_uid=None,
    issued=dt.datetime(2026, 12, 6, 18, 0, tzinfo=dt.UTC),
)


def _median_ms(step: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        step()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    control = hl7.control_id(OUTCOME)
    oru = hl7.build_oru(OUTCOME, message_control_id=control, parties=hl7.Parties())
    bundle = fhir.to_json(fhir.build_bundle(OUTCOME))
    listener, endpoint = MllpReceiver().start(), FhirReceiver().start()
    try:
        address = mllp.MllpAddress.parse(listener.url)
        base = fhir_http.FhirEndpoint.parse(endpoint.url)
        rows = [
            (
                "build and validate the ORU^R01",
                lambda: hl7.build_oru(OUTCOME, message_control_id=control, parties=hl7.Parties()),
            ),
            ("build and validate the Bundle", lambda: fhir.to_json(fhir.build_bundle(OUTCOME))),
            (
                "MLLP send + AA (loopback)",
                lambda: mllp.send(address, oru, control_id=control, timeout_s=10),
            ),
            (
                "FHIR POST + 2xx (loopback)",
                lambda: fhir_http.post_bundle(base, bundle, timeout_s=10),
            ),
        ]
        for name, step in rows:
            print(f"{name:40s} {_median_ms(step, args.runs):8.2f} ms (median of {args.runs})")
        print(f"sizes: ORU^R01 {len(oru.encode())} bytes, Bundle {len(bundle)} bytes")
    finally:
        listener.stop()
        endpoint.stop()


if __name__ == "__main__":
    main()
