"""The model side of a job: the active model (loaded once per worker), probability, heatmap.

The worker picks up a newly activated model version on its next job: the registry's ``ACTIVE``
file is read for every job (one small file), and the predictor is rebuilt when it changed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from common.settings import Settings
from models.ensemble import Ensemble
from models.inference import Predictor
from models.occlusion import occlusion_map, resample_to_image
from models.operating_point import POINT_NAMES, describe
from models.preprocessing import model_input_box, to_model_input
from models.registry import Registry
from worker.results.verdict import OUTSIDE_DOMAIN, DomainResult

log = logging.getLogger(__name__)

_cache: dict[tuple[str, str], Predictor] = {}


def active_predictor(settings: Settings) -> Predictor:
    """The predictor of the registry's active version, loaded on first use and kept."""
    registry = Registry(settings.model.registry_dir)
    version = registry.active_version()
    if version is None:
        raise RuntimeError(
            f"no active model in {settings.model.registry_dir}: run `deepcovid models activate V`"
        )
    key = (str(settings.model.registry_dir), version)
    if key not in _cache:
        _cache.clear()
        _cache[key] = Predictor.from_registry(
            settings.model.registry_dir,
            version,
            device=settings.model.device,
            engine=settings.model.engine,
            threads=settings.model.torch_threads,
        )
    return _cache[key]


@dataclass
class Analysis:
    """What the model says about one image."""

    probability: float
    threshold: float
    heatmap: np.ndarray  # drop of P(COVID-19) on the source image grid
    model_version: str
    timings: dict[str, float] = field(default_factory=dict)
    domain_score: float | None = None
    """Distance of the image's features to the training images (None: model has no check)."""
    domain_threshold: float | None = None
    in_domain: bool = True
    """False when the image failed the domain check: the finding is then indeterminate."""
    heatmap_members: int | None = None
    """For an ensemble model: how many of its members the heatmap was drawn with (setting
    ``heatmap_members``); None for a single network."""
    operating_point: str = ""
    """Name of the card's operating point whose ``threshold`` this is (setting
    ``threshold_policy``; :meth:`models.card.ModelCard.operating_point`)."""

    @property
    def operating_point_words(self) -> str:
        """The operating point in words, e.g. ``clinical (sensitivity >= 90 %)``; "" for a card's
        single threshold of no named kind (the results then quote the threshold alone)."""
        return describe(self.operating_point) if self.operating_point in POINT_NAMES else ""

    @property
    def positive(self) -> bool:
        """The finding at the model's operating threshold."""
        return self.probability >= self.threshold

    @property
    def finding(self) -> str:
        """``present`` / ``absent`` at the threshold, ``indeterminate`` outside the domain."""
        if not self.in_domain:
            return "indeterminate"
        return "present" if self.positive else "absent"

    @property
    def domain(self) -> DomainResult | None:
        """The domain check for the result builders (None when the model has none)."""
        if self.domain_score is None or self.domain_threshold is None:
            return None
        return DomainResult(self.domain_score, self.domain_threshold)

    @property
    def domain_note(self) -> str:
        """Text for the job's timeline: the domain score against its limit, when checked."""
        if self.domain_score is None or self.domain_threshold is None:
            return ""
        verdict = "passed" if self.in_domain else f"failed: {OUTSIDE_DOMAIN}"
        return f"domain score {self.domain_score:.2f} (limit {self.domain_threshold:.2f}) {verdict}"


def analyse_image(image: np.ndarray, predictor: Predictor, settings: Settings) -> Analysis:
    """Probability, domain check and occlusion heatmap of a 2-D [0, 1] MONOCHROME2 image.

    The heatmap is computed for an image outside the domain too: the overlay then shows what
    drove a probability that is reported but not called.
    """
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    x = to_model_input(image, predictor.spec)
    scores = predictor.score_tensor(x.unsqueeze(0))
    probability = float(scores.probabilities[0])
    timings["inference_s"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    model = predictor.model
    if isinstance(model, Ensemble):  # the map of the first N members' mean probability
        model = model.subset(settings.model.heatmap_members)
    with torch.inference_mode():
        grid = occlusion_map(
            model,
            x.to(next(model.parameters()).device),
            window=settings.model.occlusion_window,
            stride=settings.model.occlusion_stride,
            fill=settings.model.occlusion_fill,
            spec=predictor.spec,
        )
    # The model may see only the lung fields' box (a lung crop): its map belongs there, and the
    # rest of the film, which the model never saw, carries no evidence.
    top, bottom, left, right = model_input_box(image, predictor.spec)
    heatmap = np.zeros(image.shape, dtype=np.float32)
    heatmap[top:bottom, left:right] = resample_to_image(
        grid,
        (bottom - top, right - left),
        window=settings.model.occlusion_window,
        stride=settings.model.occlusion_stride,
        input_size=predictor.spec.input_size,
    )
    timings["heatmap_s"] = time.perf_counter() - t1
    point_name, point = predictor.card.operating_point(settings.model.threshold_policy)
    return Analysis(
        probability=probability,
        threshold=point.threshold,
        operating_point=point_name,
        heatmap=np.asarray(heatmap, dtype=np.float32),
        model_version=str(predictor.version),
        timings=timings,
        domain_score=None if scores.domain_threshold is None else float(scores.domain_scores[0]),
        domain_threshold=scores.domain_threshold,
        in_domain=bool(scores.in_domain[0]),
        heatmap_members=len(model) if isinstance(model, Ensemble) else None,
    )
