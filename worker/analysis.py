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
from models.inference import Predictor
from models.occlusion import occlusion_map, resample_to_image
from models.preprocessing import model_input_box, to_model_input
from models.registry import Registry

log = logging.getLogger(__name__)

_cache: dict[tuple[str, str], Predictor] = {}


def active_predictor(settings: Settings) -> Predictor:
    """The predictor of the registry's active version, loaded on first use and kept."""
    registry = Registry(settings.model_registry_dir)
    version = registry.active_version()
    if version is None:
        raise RuntimeError(
            f"no active model in {settings.model_registry_dir}: run `deepcovid models activate V`"
        )
    key = (str(settings.model_registry_dir), version)
    if key not in _cache:
        _cache.clear()
        _cache[key] = Predictor.from_registry(
            settings.model_registry_dir,
            version,
            device=settings.device,
            engine=settings.engine,
            threads=settings.torch_threads,
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

    @property
    def positive(self) -> bool:
        """The finding at the model's operating threshold."""
        return self.probability >= self.threshold


def analyse_image(image: np.ndarray, predictor: Predictor, settings: Settings) -> Analysis:
    """Probability and occlusion heatmap of a 2-D [0, 1] MONOCHROME2 image."""
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    x = to_model_input(image, predictor.spec)
    probability = float(predictor.predict_tensor(x.unsqueeze(0))[0])
    timings["inference_s"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    model = predictor.model
    with torch.inference_mode():
        grid = occlusion_map(
            model,
            x.to(next(model.parameters()).device),
            window=settings.occlusion_window,
            stride=settings.occlusion_stride,
            fill=settings.occlusion_fill,
            spec=predictor.spec,
        )
    # The model may see only the lung fields' box (a lung crop): its map belongs there, and the
    # rest of the film, which the model never saw, carries no evidence.
    top, bottom, left, right = model_input_box(image, predictor.spec)
    heatmap = np.zeros(image.shape, dtype=np.float32)
    heatmap[top:bottom, left:right] = resample_to_image(
        grid,
        (bottom - top, right - left),
        window=settings.occlusion_window,
        stride=settings.occlusion_stride,
        input_size=predictor.spec.input_size,
    )
    timings["heatmap_s"] = time.perf_counter() - t1
    return Analysis(
        probability=probability,
        threshold=float(predictor.card.threshold),
        heatmap=np.asarray(heatmap, dtype=np.float32),
        model_version=str(predictor.version),
        timings=timings,
    )
