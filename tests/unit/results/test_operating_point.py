"""The operating point: the worker honours ``threshold_policy``; SR, overlay and GSPS say which
point and threshold gave the finding. (That ``dciodvfy`` accepts these objects is checked in
``tests/integration/test_result_objects.py``.)"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import get_args

import numpy as np
import pytest
import torch
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes as pydicom_codes

from common.settings import Settings
from models.architectures import build_model
from models.card import ModelCard
from models.inference import Predictor
from models.operating_point import CLINICAL, PAPER, POINT_NAMES, OperatingPoint
from models.preprocessing import to_model_input
from tests.harness.factories import wrap_pixels
from tests.harness.srread import read_report
from tests.unit.results.builders import build
from worker import pipeline
from worker.analysis import analyse_image
from worker.results import AlgorithmInfo, ResultUIDs, codes
from worker.results.gsps import annotation_lines
from worker.results.sc import caption_lines

CLINICAL_WORDS = "clinical (sensitivity >= 90 %)"


@pytest.fixture
def clinical_algorithm(algorithm: AlgorithmInfo) -> AlgorithmInfo:
    """The conftest algorithm deciding at the clinical point, threshold 0.41."""
    card = ModelCard(architecture="squeezenet1_1", device_uid=algorithm.device_uid, threshold=0.3)
    return AlgorithmInfo.from_card(
        card,
        version=algorithm.version,
        threshold=0.41,
        operating_point=CLINICAL_WORDS,
        parameters={"occlusion_window": 32},
    )


def _settings(policy: str, **kw: object) -> Settings:
    return Settings(
        model={"occlusion_window": 56, "occlusion_stride": 56, "threshold_policy": policy}, **kw
    )


def _analyse(predictor: Predictor, policy: str, image: np.ndarray) -> tuple[str, float, str]:
    result = analyse_image(image, predictor, _settings(policy))
    return result.finding, result.threshold, result.operating_point


IMAGE = np.linspace(0.0, 1.0, 64 * 64, dtype=np.float32).reshape(64, 64)


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    """A random SqueezeNet whose card holds one threshold (0.5, its method names the paper's
    98 % rule), as cards written before the named points do."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    card = ModelCard(
        architecture="squeezenet1_1",
        version="v1",
        device_uid="1.2.826.0.1.3680043.8.498.1",
        threshold=0.5,
        threshold_method="highest threshold with sensitivity >= 0.98 on the val split",
    )
    return Predictor(build_model("squeezenet1_1"), card, device="cpu", engine="eager")


def _with_points_around_the_image(predictor: Predictor) -> tuple[ModelCard, float, float]:
    """The predictor's card with a paper point just below and a clinical point just above the
    image's probability."""
    x = to_model_input(IMAGE, predictor.spec).unsqueeze(0)
    p = float(predictor.score_tensor(x).probabilities[0])
    assert 0.02 < p < 0.98  # room for a point on either side
    paper_t, clinical_t = p - 0.01, p + 0.01
    card = predictor.card.replace(
        threshold=paper_t,
        operating_points={
            PAPER: OperatingPoint(paper_t, "paper rule").to_dict(),
            CLINICAL: OperatingPoint(clinical_t, "clinical rule").to_dict(),
        },
    )
    return card, paper_t, clinical_t


def test_policy_decides_the_finding_in_the_analysis_path(predictor: Predictor) -> None:
    """A probability between the two points: Present at the paper point, Absent at the
    clinical one; a card without points uses its single threshold under either policy."""
    older = predictor.card
    p = float(predictor.predict(IMAGE)[0])
    for policy in (PAPER, CLINICAL):  # an older card: its one threshold, named paper
        assert _analyse(predictor, policy, IMAGE) == (
            "present" if p >= 0.5 else "absent",
            0.5,
            PAPER,
        )
    card, paper_t, clinical_t = _with_points_around_the_image(predictor)
    predictor.card = card
    try:
        assert _analyse(predictor, PAPER, IMAGE) == ("present", paper_t, PAPER)
        assert _analyse(predictor, CLINICAL, IMAGE) == ("absent", clinical_t, CLINICAL)
    finally:
        predictor.card = older


def _texts(items: Sequence[Dataset]) -> list[str]:
    """The TEXT values anywhere in an SR content tree."""
    values: list[str] = []
    for item in items:
        if "TextValue" in item:
            values.append(str(item.TextValue))
        values += _texts(item.get("ContentSequence", []))
    return values


class _NoPrevious:
    """The outbox as ``_build_and_write`` reads it: no earlier SR of this image."""

    def previous_sr(self, job_id: int, version: str) -> None:
        return None


def test_the_worker_writes_the_point_it_used(predictor: Predictor, tmp_path: Path) -> None:
    """Through the worker's own result path: the SR's algorithm parameters and the overlay's
    comments name the clinical point and its threshold, which decided the finding."""
    older = predictor.card
    card, _, clinical_t = _with_points_around_the_image(predictor)
    predictor.card = card
    try:
        settings = _settings(CLINICAL, data_dir=tmp_path)
        result = analyse_image(IMAGE, predictor, settings)
        settings.storage.results.mkdir(parents=True, exist_ok=True)
        ds = wrap_pixels((IMAGE * 255).astype(np.uint8))
        written = pipeline._build_and_write(
            1,
            ds,
            IMAGE,
            result,
            predictor,
            ResultUIDs.derive(ds.SOPInstanceUID, result.model_version),
            _NoPrevious(),  # type: ignore[arg-type]
            settings,
        )
    finally:
        predictor.card = older
    paths = {r.kind: Path(r.path) for r in written}
    sr, sc = dcmread(paths["sr"]), dcmread(paths["sc"])
    texts = _texts(sr.ContentSequence)
    assert f"operating_point={CLINICAL_WORDS}" in texts
    assert f"threshold={clinical_t}" in texts  # the clinical point's, not the card's threshold
    assert sc.ImageComments.startswith("COVID-19 pattern: ABSENT")
    assert f"operating point: {CLINICAL_WORDS}, threshold {clinical_t:.4f}" in sc.ImageComments


def test_default_policy_is_the_clinical_point_and_the_choices_are_the_cards_names() -> None:
    # docs/training.md, "The rule for the card's points and the default policy"
    assert Settings().model.threshold_policy == CLINICAL
    field = type(Settings().model).model_fields["threshold_policy"]
    assert get_args(field.annotation) == POINT_NAMES  # common cannot import models: checked here


def test_algorithm_parameters_name_the_point_and_its_threshold(
    clinical_algorithm: AlgorithmInfo,
) -> None:
    assert clinical_algorithm.parameter_strings == [
        "architecture=squeezenet1_1",
        "input_size=224",
        "occlusion_window=32",
        f"operating_point={CLINICAL_WORDS}",
        "threshold=0.41",  # the point's, not the card's 0.3
    ]
    assert clinical_algorithm.threshold_words(0.41) == (
        f"operating point: {CLINICAL_WORDS}, threshold 0.410"
    )


def test_sr_states_the_point_and_value(
    source: Dataset, clinical_algorithm: AlgorithmInfo, heatmap: np.ndarray, display_image
) -> None:
    sr = build(
        source, clinical_algorithm, heatmap, display_image, probability=0.405, threshold=0.41
    ).sr
    report = read_report(sr)
    group = report.image_group
    assert group is not None
    assert report.verdict == codes.ABSENT.meaning  # 0.405 < 0.41
    values = {m.name.meaning: m.value for m in group.get_measurements()}
    assert values["Threshold Value"] == 41.0  # percent
    params = [
        item.value for item in group[0].ContentSequence.find(pydicom_codes.DCM.AlgorithmParameters)
    ]
    assert f"operating_point={CLINICAL_WORDS}" in params and "threshold=0.41" in params


def test_overlay_and_gsps_state_the_point_and_value(
    source: Dataset, clinical_algorithm: AlgorithmInfo, heatmap: np.ndarray, display_image
) -> None:
    words = f"operating point: {CLINICAL_WORDS}, threshold 0.410"
    lines = caption_lines(0.405, 0.41, clinical_algorithm)
    assert lines[0] == "COVID-19 pattern: ABSENT"
    assert lines[1] == "Deep-COVID 2026.11.1: COVID-19 probability 0.405"
    assert lines[2] == words
    gsps_lines = annotation_lines(0.405, 0.41, clinical_algorithm)
    assert gsps_lines[1:3] == ["COVID-19 probability 0.405", words]

    results = build(
        source, clinical_algorithm, heatmap, display_image, probability=0.405, threshold=0.41
    )
    assert results.sc.ImageComments == (
        "COVID-19 pattern: ABSENT; COVID-19 probability 0.4050, "
        f"operating point: {CLINICAL_WORDS}, threshold 0.4100"
    )
    texts = [
        text.UnformattedTextValue
        for annotation in results.gsps.GraphicAnnotationSequence
        for text in annotation.get("TextObjectSequence", [])
    ]
    assert words in texts


def test_without_a_named_point_the_captions_are_unchanged(algorithm: AlgorithmInfo) -> None:
    assert algorithm.operating_point == ""
    assert caption_lines(0.8, 0.42, algorithm)[1] == (
        "Deep-COVID 2026.11.1: COVID-19 probability 0.800 (threshold 0.420)"
    )
    assert (
        annotation_lines(0.8, 0.42, algorithm)[1] == "COVID-19 probability 0.800 (threshold 0.420)"
    )
