"""COVID-19 probabilities of preloaded gray images, the way serving computes them.

Serving feeds ``to_model_input(image)``, i.e. ``normalise(resize_image(image))``; the gray tensors
of :class:`training.dataset.SplitData` are ``resize_image`` outputs, so normalising them here gives
the same input, and the probability is ``softmax(logits)[:, COVID_INDEX]`` in float32.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from models.architectures import covid_probability
from models.preprocessing import PreprocessSpec, normalise


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but PyTorch sees no CUDA GPU")
    return device


def setup_device(name: str, threads: int | None = None) -> torch.device:
    """The device of an evaluation (:func:`resolve_device`), with ``threads`` torch CPU threads.

    On CUDA, TF32 is switched off: evaluation runs in IEEE fp32 as serving does (TF32 would move
    the probabilities, and with them the threshold).
    """
    if threads:
        torch.set_num_threads(threads)
    device = resolve_device(name)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    return device


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    gray: torch.Tensor,
    spec: PreprocessSpec,
    device: torch.device,
    batch_size: int = 64,
) -> torch.Tensor:
    """Logits ``[N, 2]`` (float32, on the CPU) of gray images ``[N, 1, S, S]`` in eval mode."""
    was_training = model.training
    model.eval()
    out = []
    try:
        for start in range(0, gray.shape[0], batch_size):
            x = normalise(gray[start : start + batch_size].to(device, torch.float32), spec)
            out.append(model(x).float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, 2)


def probabilities(logits: torch.Tensor) -> np.ndarray:
    """COVID-19 probabilities from logits (``softmax[:, COVID_INDEX]``) as float64 numpy."""
    return covid_probability(logits).double().numpy()
