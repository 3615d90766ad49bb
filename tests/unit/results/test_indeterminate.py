"""An image outside the model's validated domain: SR, overlay caption and the worker's verdict.

The SR codes the finding Indeterminate (SCT 82334004) with the reason as a TEXT Comment beside
it, in the report's Qualitative Evaluations, and still reports the probability; the overlay
says so in words. That ``dciodvfy`` and PixelMed accept the SR is checked with the other
validators in ``tests/integration/test_result_objects.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset

from tests.harness.srread import read_report
from tests.unit.results.builders import build
from worker.analysis import Analysis
from worker.results import OUTSIDE_DOMAIN, AlgorithmInfo, DomainResult, codes
from worker.results.sc import caption_lines
from worker.results.verdict import verdict_words

FAILED = DomainResult(score=41.25, threshold=17.15)
PASSED = DomainResult(score=12.0, threshold=17.15)


def _code_items(sr: Dataset, meaning: str) -> list[Dataset]:
    """CODE items anywhere in the tree whose concept name is ``meaning`` (plain pydicom walk)."""
    found = []

    def walk(items: object) -> None:
        for item in items:  # type: ignore[attr-defined]
            if item.ValueType == "CODE" and item.ConceptNameCodeSequence[0].CodeMeaning == meaning:
                found.append(item)
            walk(item.get("ContentSequence", []))

    walk(sr.ContentSequence)
    return found


def test_indeterminate_sr_has_the_code_the_reason_and_the_probability(
    source, algorithm, heatmap, display_image
) -> None:
    sr = build(source, algorithm, heatmap, display_image, probability=0.8, domain=FAILED).sr
    report = read_report(sr)
    assert report.verdict == "Indeterminate"
    # The same, read with pydicom alone: one coded verdict in the tree (the report's), and its
    # reason as the TEXT Comment beside it (TID 1500 rows 13 and 14).
    (item,) = _code_items(sr, "COVID-19")
    concept = item.ConceptCodeSequence[0]
    assert (concept.CodeValue, concept.CodingSchemeDesignator, concept.CodeMeaning) == (
        "82334004",
        "SCT",
        "Indeterminate",
    )
    assert "ContentSequence" not in item
    (reason,) = report.comments
    assert reason.startswith(OUTSIDE_DOMAIN)
    assert "41.25" in reason and "17.15" in reason
    # The probability and the threshold are still reported; the regions name the verdict.
    assert report.image_group is not None
    assert report.numbers(report.image_group) == {
        "Probability": (80.0, "%"),
        "Threshold Value": (42.0, "%"),
    }
    for group in report.region_groups:
        (number,) = group.get_measurements()
        assert number.name == codes.REGION_PROBABILITY_INDETERMINATE


@pytest.mark.parametrize(("probability", "expected"), [(0.8, codes.PRESENT), (0.1, codes.ABSENT)])
def test_a_passed_domain_check_leaves_the_finding_alone(
    source, algorithm, heatmap, display_image, probability, expected
) -> None:
    sr = build(source, algorithm, heatmap, display_image, probability=probability, domain=PASSED).sr
    report = read_report(sr)
    assert report.verdict == expected.meaning
    assert report.comments == ()  # no reason text


def test_caption_leads_with_the_verdict_in_words(algorithm: AlgorithmInfo) -> None:
    lines = caption_lines(0.8, 0.42, algorithm, FAILED)
    assert lines[0] == "COVID-19 pattern: INDETERMINATE (outside the model's validated domain)"
    assert lines[1] == "Deep-COVID 2026.11.1: COVID-19 probability 0.800 (threshold 0.420)"
    assert lines[2] == "RESEARCH USE ONLY - NOT FOR DIAGNOSTIC USE"
    assert caption_lines(0.8, 0.42, algorithm)[0] == "COVID-19 pattern: PRESENT"
    assert caption_lines(0.1, 0.42, algorithm, PASSED)[0] == "COVID-19 pattern: ABSENT"
    assert verdict_words(0.42, 0.42, None) == "COVID-19 pattern: PRESENT"


def test_overlay_of_an_indeterminate_image_burns_that_caption(
    source, algorithm, heatmap, display_image, monkeypatch: pytest.MonkeyPatch
) -> None:
    import worker.results.sc as sc_module

    burned: list[list[str]] = []
    real = sc_module.burn_caption

    def spy(rgb: np.ndarray, lines: list[str]) -> np.ndarray:
        burned.append(lines)
        return real(rgb, lines)

    monkeypatch.setattr(sc_module, "burn_caption", spy)
    results = build(source, algorithm, heatmap, display_image, domain=FAILED)
    assert burned == [caption_lines(0.8, 0.42, algorithm, FAILED)]
    assert results.sc.ImageComments.startswith(
        "COVID-19 pattern: INDETERMINATE (outside the model's validated domain); "
        "COVID-19 probability 0.8000"
    )


def test_analysis_says_indeterminate_outside_the_domain() -> None:
    heat = np.zeros((4, 4), dtype=np.float32)
    inside = Analysis(0.9, 0.5, heat, "v1", domain_score=3.0, domain_threshold=5.0)
    outside = Analysis(
        0.9, 0.5, heat, "v1", domain_score=9.0, domain_threshold=5.0, in_domain=False
    )
    unchecked = Analysis(0.2, 0.5, heat, "v1")
    assert (inside.finding, outside.finding, unchecked.finding) == (
        "present",
        "indeterminate",
        "absent",
    )
    assert outside.domain == DomainResult(9.0, 5.0) and not outside.domain.passed
    assert OUTSIDE_DOMAIN in outside.domain_note and "9.00" in outside.domain_note
    assert unchecked.domain is None and unchecked.domain_note == ""
    assert len("indeterminate") <= 16  # fits the job table's finding column


def test_algorithm_parameters_name_the_domain_threshold() -> None:
    from models.card import ModelCard
    from models.ood import DomainCheckSpec

    card = ModelCard(
        architecture="squeezenet1_1",
        device_uid="1.2.3",
        domain_check=DomainCheckSpec(
            threshold=17.146295,
            file="domain-0123456789ab.npz",
            sha256="ab" * 32,
            feature_dim=512,
            components=128,
            shrinkage=0.004,
        ),
    )
    info = AlgorithmInfo.from_card(card, version="v1")
    assert "domain_threshold=17.1463" in info.parameter_strings
    plain = AlgorithmInfo.from_card(card.replace(domain_check=None), version="v1")
    assert not any(p.startswith("domain_threshold") for p in plain.parameter_strings)
