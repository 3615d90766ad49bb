"""The end-to-end benchmark's stage table adds up: no negative stage, shares summing to 100 %.

It printed "intake+indexing -0.21 s (-13.1 %)": the median round trip minus the sum of the
stages' medians, where the delivery stage ran past the end of the round trip (the C-FIND
confirmation comes after the objects are visible). The stages are now consecutive moments of one
clock, ending when the results were seen.
"""

from __future__ import annotations

import datetime as dt
import re

from benchmarks.bench_end_to_end import STAGES, stage_report, stage_times
from store.jobstore import EventView

T0 = dt.datetime(2026, 11, 29, 12, 0, 0, tzinfo=dt.UTC)


def timeline(offsets: dict[str, float], naive: bool = False) -> list[EventView]:
    events = []
    for state, seconds in offsets.items():
        at = T0 + dt.timedelta(seconds=seconds)
        message = "P(COVID-19)=0.3 ...; read 0.05 s, inference 0.40 s, heatmap 1.20 s"
        events.append(
            EventView(
                at.replace(tzinfo=None) if naive else at,
                state,
                message if state == "analysed" else None,
            )
        )
    return events


def test_stages_are_consecutive_and_add_up_to_the_round_trip() -> None:
    sent = T0.timestamp() - 0.3
    events = timeline(
        {
            "received": 0.0,
            "queued": 0.01,
            "analysing": 0.1,
            "analysed": 2.0,
            "results_built": 2.4,
            "delivered": 3.6,  # after the C-FIND confirmation: past the end of the round trip
        },
        naive=True,  # as SQLite returns them
    )
    seen = T0.timestamp() + 3.1
    stages = stage_times(events, sent, seen)
    assert tuple(stages) == STAGES
    assert all(v >= 0 for v in stages.values()), stages
    assert abs(sum(stages.values()) - (seen - sent)) < 1e-6
    assert abs(stages["read+gate"] - 0.3) < 1e-6


def test_the_report_shares_sum_to_100_percent() -> None:
    runs = [
        dict.fromkeys(STAGES, 0.5),
        {**dict.fromkeys(STAGES, 0.2), "heatmap": 3.0},
    ]
    lines = stage_report(runs)
    shares = [float(m.group(1)) for m in re.finditer(r"\(\s*([\d.]+) %\)", "\n".join(lines))]
    assert len(shares) == len(STAGES)
    assert abs(sum(shares) - 100.0) < 0.5
    assert all(share >= 0 for share in shares)
