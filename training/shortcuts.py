"""The shortcut checks of ``evaluate`` in one call: lung fields, probes, heatmap localisation.

The lung fields are found once per image (on the gray image the model scores) and shared by the
probes (:mod:`training.probes`), the localisation sample (:mod:`training.localisation`) and the
outline in the occlusion figure; the localisation maps are handed on so the figure does not occlude
an image twice. Each part can be skipped; a skipped part is recorded as ``{"skipped": reason}`` so
the report says why it is missing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from models.card import ModelCard
from training.baseline import source_name
from training.dataset import SplitData
from training.evaluate import Scored
from training.localisation import localise
from training.probes import lung_masks, run_probes


@dataclass
class ShortcutChecks:
    """What the checks found, for ``metrics.json`` and the occlusion figure."""

    probes: dict[str, Any]
    localisation: dict[str, Any]
    masks: torch.Tensor | None = None
    """``[N, 1, S, S]`` bool lung fields of the scored images (None if not computed)."""
    maps: dict[int, np.ndarray] = field(default_factory=dict)
    """Occlusion maps of the localisation sample on the S x S grid, by image index."""


def shortcut_checks(
    model: nn.Module,
    card: ModelCard,
    data: SplitData,
    scored: Scored,
    device: torch.device,
    *,
    probes: bool = True,
    localisation_sample: int = 40,
    localisation_seed: int = 0,
    window: int = 32,
    stride: int = 8,
    batch_size: int = 64,
    log: Callable[[str], None] | None = None,
) -> ShortcutChecks:
    """Lung fields of every image, then the probes and the localisation sample as asked."""
    say = log or (lambda _msg: None)
    sources = [source_name(r) for r in data.rows]
    t0 = time.perf_counter()
    try:
        masks = lung_masks(data.gray)
    except Exception as exc:  # a broken localiser must not cost the rest of the report
        reason = f"lung fields unavailable: {type(exc).__name__}: {exc}"
        return ShortcutChecks({"skipped": reason}, {"skipped": reason})
    say(f"lung fields of {len(sources)} images in {time.perf_counter() - t0:.1f} s")
    if probes:
        t0 = time.perf_counter()
        probe_summary, _ = run_probes(
            model,
            data.gray,
            scored.labels,
            sources,
            scored.probs,
            card.preprocess,
            device,
            masks=masks,
            batch_size=batch_size,
        )
        say(f"shortcut probes in {time.perf_counter() - t0:.1f} s")
    else:
        probe_summary = {"skipped": "disabled (--no-probes)"}
    maps: dict[int, np.ndarray] = {}
    if localisation_sample > 0:
        t0 = time.perf_counter()
        try:
            loc, maps = localise(
                model,
                data.gray,
                masks.masks,
                scored.labels,
                sources,
                scored.probs,
                card.threshold,
                card.preprocess,
                sample_size=localisation_sample,
                seed=localisation_seed,
                window=window,
                stride=stride,
                device=device,
            )
        except ImportError as exc:  # the models package may be older than this report
            loc = {"skipped": f"models.occlusion unavailable ({exc})"}
        say(f"localisation of {len(maps)} images in {time.perf_counter() - t0:.1f} s")
    else:
        loc = {"skipped": "disabled (--localisation-sample 0)"}
    return ShortcutChecks(probe_summary, loc, masks.masks, maps)
