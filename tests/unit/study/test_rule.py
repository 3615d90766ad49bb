"""The study finding rule, the image that drives it, and the fingerprint of a study's outcome."""

from __future__ import annotations

import dataclasses

from tests.unit.study.conftest import image
from worker.study.rule import NOTHING_ANALYSED, fingerprint, study_finding


def test_any_present_image_makes_the_study_present_and_drives_it() -> None:
    images = [
        image(1, "absent", 0.1),
        image(2, "present", 0.6),
        image(3, "indeterminate", 0.9),
        image(4, "present", 0.8),
    ]
    finding = study_finding(images)
    assert finding.finding == "present"
    assert finding.driver == images[3]  # the present image with the highest probability
    assert finding.probability == 0.8
    assert finding.reason == "present in 2 of 4 analysed image(s)"


def test_indeterminate_wins_over_absent_when_none_is_present() -> None:
    images = [image(1, "absent", 0.45), image(2, "indeterminate", 0.2), image(3, "absent", 0.1)]
    finding = study_finding(images)
    assert finding.finding == "indeterminate"
    assert finding.driver == images[1]


def test_all_absent_is_absent_driven_by_the_closest_call() -> None:
    images = [image(1, "absent", 0.1), image(2, "absent", 0.4)]
    finding = study_finding(images)
    assert (finding.finding, finding.driver) == ("absent", images[1])


def test_rejected_and_failed_images_never_decide_the_study() -> None:
    images = [
        image(1, "rejected", reason="lateral view (from the image)"),
        image(2, "absent", 0.3),
        image(3, "failed", reason="pixel data cannot be converted"),
    ]
    finding = study_finding(images)
    assert (finding.finding, finding.driver) == ("absent", images[1])


def test_a_study_with_no_analysed_image_is_indeterminate_not_absent() -> None:
    finding = study_finding([image(1, "rejected", reason="CT slice (from the image)")])
    assert finding.finding == "indeterminate"
    assert finding.driver is None
    assert finding.reason == NOTHING_ANALYSED
    assert finding.probability is None


def test_the_fingerprint_ignores_order_and_sees_a_new_image_or_finding() -> None:
    images = [image(1, "absent", 0.1), image(2, "present", 0.7)]
    assert fingerprint(images) == fingerprint(list(reversed(images)))
    assert fingerprint(images) != fingerprint([*images, image(3, "absent", 0.2)])
    changed = [images[0], dataclasses.replace(images[1], finding="absent")]
    assert fingerprint(images) != fingerprint(changed)


def test_an_image_outcome_for_the_ris_keeps_finding_probability_and_reason() -> None:
    rejected = image(1, "rejected", reason="lateral view (from the image)").outcome()
    assert (rejected.finding, rejected.probability, rejected.reason) == (
        "rejected",
        None,
        "lateral view (from the image)",
    )
    analysed = image(2, "present", 0.7).outcome()
    assert (analysed.finding, analysed.probability, analysed.reason) == ("present", 0.7, None)
