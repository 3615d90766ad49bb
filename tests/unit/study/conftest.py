"""A study of synthetic images and the algorithm card for the study-result unit tests."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from tests.harness.factories import wrap_pixels
from worker.results import AlgorithmInfo
from worker.study.rule import ImageResult

STUDY_UID = generate_uid(entropy_srcs=["tests", "study"])


def image(
    job_id: int,
    finding: str,
    probability: float | None = None,
    *,
    reason: str | None = None,
    threshold: float = 0.5,
) -> ImageResult:
    """An image of the study with the given outcome (UIDs derived from ``job_id``)."""
    analysed = probability is not None
    return ImageResult(
        job_id=job_id,
        sop_instance_uid=generate_uid(entropy_srcs=["tests", "image", str(job_id)]),
        sop_class_uid="1.2.840.10008.5.1.4.1.1.1",
        series_instance_uid=generate_uid(entropy_srcs=["tests", "series", str(job_id)]),
        finding=finding,
        probability=probability,
        threshold=threshold if analysed else None,
        model_version="2026.11.1" if analysed else None,
        reason=reason,
        modality="CR",
        rows=96,
        columns=80,
    )


def header(result: ImageResult, view: str = "PA") -> Dataset:
    """The header the listener spooled for ``result`` (pixels dropped by the builders)."""
    pixels = np.zeros((96, 80), dtype=np.uint16)
    ds = wrap_pixels(
        pixels,
        view_position=view,
        study_instance_uid=STUDY_UID,
        sop_instance_uid=result.sop_instance_uid,
    )
    ds.SeriesInstanceUID = result.series_instance_uid
    return ds


@pytest.fixture
def algorithm() -> AlgorithmInfo:
    return AlgorithmInfo(
        name="Deep-COVID",
        version="2026.11.1",
        device_uid=generate_uid(entropy_srcs=["tests", "device"]),
        model_name="squeezenet1_1",
        parameters={"threshold": 0.5},
    )
