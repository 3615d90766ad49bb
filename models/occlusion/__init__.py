"""Occlusion sensitivity maps, as a small package whose parts depend one way.

``grid`` (where the occluder goes) <- ``incremental`` (exact incremental inference) <- ``reference``
(the public entry points: batched reference method, the fast method's dispatch, resampling).
"""

from models.occlusion.grid import OcclusionGrid
from models.occlusion.reference import (
    Fill,
    Method,
    base_probability,
    fill_value,
    occlusion_flops,
    occlusion_map,
    reference_scores,
    resample_to_image,
)

__all__ = [
    "Fill",
    "Method",
    "OcclusionGrid",
    "base_probability",
    "fill_value",
    "occlusion_flops",
    "occlusion_map",
    "reference_scores",
    "resample_to_image",
]
