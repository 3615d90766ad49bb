"""Time to build and send one study result's RIS messages (not a test).

Builds the HL7 v2.5.1 ORU^R01 (hl7apy, strict) and the FHIR transaction Bundle (fhir.resources)
of one study result, and sends each to the loopback test receivers of ``tests.harness.ris`` (the
MLLP listener parses every message strictly, the FHIR endpoint validates every Bundle), reporting
the median of ``--runs``. Usage (figures in docs/ris.md)::

    .venv/bin/python benchmarks/bench_ris.py --runs 50
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ris import fhir, fhir_http, hl7, mllp  # noqa: E402
from tests.harness.ris import FhirReceiver, MllpReceiver, study_outcome  # noqa: E402

OUTCOME = study_outcome(  # one analysed image, no KOS: as the figures in docs/ris.md
    model_version="bench",
    images=study_outcome().images[:1],
    kos_sop_instance_uid=None,
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
