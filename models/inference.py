"""Score chest X-rays with a model version: the COVID-19 probability per image.

A :class:`Predictor` loads a version once (weights checked against the card), moves it to the
device in eval mode and channels-last layout, and scores batches under ``torch.inference_mode``.

Engines (all fp32 unless ``precision="bf16"`` is asked for):

- ``eager``: PyTorch, channels-last.
- ``onnx``: ONNX Runtime (CPU). The model is exported once and cached next to the version
  (``<registry>/.cache/``), or in the temp folder when the registry is read-only.
- ``compile``: ``torch.compile`` (inductor, with weight freezing).
- ``auto``: the fastest engine that keeps fp32 probabilities within 1e-4 of eager, per device, as
  measured on this project's machines (see ``docs/models.md``; :data:`AUTO_ENGINE`).

Every engine runs the network as :class:`models.ood.FeaturesAndLogits` (ONNX: one graph with
``logits`` and ``features`` outputs), so a model card with a domain check gets its domain score
from the same forward pass as the probability (:meth:`Predictor.score`).

An ensemble version (:class:`models.ensemble.Ensemble`) runs in every engine as one network
whose probability is the mean of its members' (ONNX: one graph holding every member), with its
members' features side by side for its domain check (:class:`models.ood.EnsembleDomainCheck`).

On CUDA, fp32 means IEEE fp32: the predictor turns off TF32 convolutions and matmuls, which would
otherwise move probabilities by more than 1e-4.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from common.atomic import atomic_path
from models.card import ModelCard
from models.ood import DomainCheck, EnsembleDomainCheck, FeaturesAndLogits
from models.preprocessing import to_model_input

log = logging.getLogger(__name__)

Engine = Literal["auto", "eager", "onnx", "compile"]
Device = Literal["auto", "cpu", "cuda"]
Precision = Literal["fp32", "bf16"]

ENGINES: tuple[str, ...] = ("eager", "onnx", "compile")

AUTO_ENGINE: dict[str, str] = {"cpu": "onnx", "cuda": "eager"}
"""What ``engine="auto"`` picks per device, from the measurements in ``docs/models.md``."""

ONNX_OPSET = 17


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but no CUDA GPU is available")
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"unknown device {device!r}; expected auto, cpu or cuda")
    return torch.device(device)


def resolve_engine(engine: str, device: torch.device, precision: str = "fp32") -> str:
    """``auto`` -> the measured default for the device; ONNX Runtime is CPU- and fp32-only here."""
    if engine == "auto":
        chosen = AUTO_ENGINE[device.type]
        if chosen == "onnx" and precision != "fp32":
            chosen = "eager"
        return chosen
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; expected auto or one of {', '.join(ENGINES)}")
    if engine == "onnx" and (device.type != "cpu" or precision != "fp32"):
        raise ValueError("the onnx engine runs fp32 on the CPU only; use eager or compile")
    return engine


def use_ieee_fp32_on_cuda() -> None:
    """Turn off TF32 in cuDNN convolutions and CUDA matmuls (process-wide): fp32 means fp32."""
    with contextlib.suppress(AttributeError):
        torch.backends.cudnn.conv.fp32_precision = "ieee"  # type: ignore[attr-defined]  # new in torch 2.9, not in stubs
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")


def prepare_module(model: nn.Module, device: torch.device) -> nn.Module:
    """Eval mode, no gradients, on ``device``, channels-last (faster convolutions, CPU and GPU)."""
    model = model.eval().to(device).to(memory_format=torch.channels_last)
    for param in model.parameters():
        param.requires_grad_(False)
    return model


def state_dict_sha256(model: nn.Module) -> str:
    """sha256 of a model's serialised state dict (cache key for models not from a registry)."""
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, buffer)
    return hashlib.sha256(buffer.getvalue()).hexdigest()


def export_onnx(
    model: nn.Module,
    path: Path,
    input_size: int,
    output_names: Sequence[str] = ("logits",),
) -> Path:
    """Export ``model`` (CPU, fp32) to ONNX with a dynamic batch axis; atomic write to ``path``.

    ``output_names`` names the model's outputs in order (the predictor exports
    :class:`models.ood.FeaturesAndLogits`: ``logits`` and ``features``).
    """
    cpu_model = model.eval().to("cpu").to(memory_format=torch.contiguous_format)
    dummy = torch.zeros(1, 3, input_size, input_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of the dynamo one, which needs
        # onnxscript; it still exports these convolutional networks exactly.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            cpu_model,
            (dummy,),
            tmp,
            dynamo=False,
            input_names=["input"],
            output_names=list(output_names),
            dynamic_axes={"input": {0: "batch"}, **{n: {0: "batch"} for n in output_names}},
            opset_version=ONNX_OPSET,
        )
    return path


def _onnx_cache_path(cache_dir: Path | None, key: str) -> Path:
    """A writable place for the exported model: ``cache_dir`` if usable, else the temp folder."""
    # "feat": the graph has the features output too (files of the logits-only export differ).
    name = f"model-{key[:16]}-feat-torch{torch.__version__.split('+')[0]}-opset{ONNX_OPSET}.onnx"
    if cache_dir is not None:
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            if os.access(cache_dir, os.W_OK):
                return cache_dir / name
        except OSError:
            pass
    return Path(tempfile.gettempdir()) / "deepcovid-onnx-cache" / name


class _OnnxRunner:
    """ONNX Runtime session that takes and returns torch tensors."""

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        array = x.detach().to("cpu", memory_format=torch.contiguous_format).numpy()
        logits, features = self.session.run(["logits", "features"], {"input": array})
        return torch.from_numpy(logits), torch.from_numpy(features)


@dataclass(frozen=True, eq=False)
class Scores:
    """What the predictor says about a batch: the probability and the domain check, per image."""

    probabilities: np.ndarray
    """COVID-19 probability, float32 ``[N]``."""
    domain_scores: np.ndarray
    """Domain score (:mod:`models.ood`), float64 ``[N]``; NaN when the model has no check."""
    in_domain: np.ndarray
    """Bool ``[N]``: the image passed the domain check (True when the model has no check)."""
    domain_threshold: float | None
    """The check's threshold, or None when the model has none."""


class Predictor:
    """A model version ready to score images; load once, call :meth:`predict` many times.

    When the card has a domain check (``domain``, loaded by :meth:`from_registry`),
    :meth:`score` also says whether each image is like those the model was validated on. The
    network runs as :class:`models.ood.FeaturesAndLogits` in every engine, so the features
    the check needs come out of the same forward pass as the logits.
    """

    def __init__(
        self,
        model: nn.Module,
        card: ModelCard,
        *,
        version: str | None = None,
        device: str = "auto",
        engine: str = "auto",
        threads: int | None = None,
        precision: Precision = "fp32",
        batch_size: int = 16,
        cache_dir: Path | None = None,
        domain: DomainCheck | EnsembleDomainCheck | None = None,
    ) -> None:
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be fp32 or bf16, got {precision!r}")
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.card = card
        self.version = version or card.version or None
        self.device = resolve_device(device)
        self.engine = resolve_engine(engine, self.device, precision)
        self.precision: Precision = precision
        self.batch_size = batch_size
        self.spec = card.preprocess
        if threads is not None:
            if threads < 1:
                raise ValueError("threads must be at least 1")
            torch.set_num_threads(threads)
        self.threads = threads or torch.get_num_threads()
        if self.device.type == "cuda" and precision == "fp32":
            use_ieee_fp32_on_cuda()
        self.model = prepare_module(model, self.device)
        self.domain = domain
        self.net = FeaturesAndLogits(self.model, card.architecture)
        self._run = self._build_runner(cache_dir)
        log.info(
            "model %s %s loaded on %s, engine %s, %s, %d threads",
            card.architecture,
            self.version or "(unsaved)",
            self.device,
            self.engine,
            precision,
            self.threads,
        )

    @classmethod
    def from_registry(
        cls,
        root: str | Path,
        version: str | None = None,
        device: str = "auto",
        engine: str = "auto",
        threads: int | None = None,
        **kwargs: Any,
    ) -> Predictor:
        """Load ``version`` (default: the active one) of the registry at ``root``."""
        from models.registry import Registry

        registry = Registry(root)
        model, card = registry.load(version)
        domain = registry.domain_check(card.version)
        return cls(
            model,
            card,
            version=card.version,
            device=device,
            engine=engine,
            threads=threads,
            cache_dir=registry.root / ".cache",
            domain=domain,
            **kwargs,
        )

    # --- engines -----------------------------------------------------------------------------
    def _build_runner(
        self, cache_dir: Path | None
    ) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        if self.engine == "onnx":
            saved = self.card.weights_fingerprint
            key = saved or state_dict_sha256(self.model)
            path = _onnx_cache_path(cache_dir if saved else None, key)
            if not path.is_file():
                export_onnx(self.net, path, self.spec.input_size, ("logits", "features"))
                self.model.to(memory_format=torch.channels_last)
            return _OnnxRunner(path, self.threads)
        if self.engine == "compile":
            compiled = torch.compile(self.net, options={"freezing": True})
            return compiled
        return self.net

    # --- scoring -----------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits [N, 2] and pooled features [N, D] (float32, CPU) of a batch [N, 3, S, S]."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected a batch [N, 3, S, S], got {tuple(x.shape)}")
        logits, features = [], []
        with torch.inference_mode():
            for start in range(0, x.shape[0], self.batch_size):
                chunk = x[start : start + self.batch_size]
                if self.engine != "onnx":
                    chunk = chunk.to(self.device, memory_format=torch.channels_last)
                if self.precision == "bf16" and self.engine != "onnx":
                    with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16):
                        out, feat = self._run(chunk)
                else:
                    out, feat = self._run(chunk)
                logits.append(out.float().cpu())
                features.append(feat.float().cpu())
        return torch.cat(logits), torch.cat(features)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Raw logits [N, 2] (float32, CPU) of a normalised batch [N, 3, S, S]."""
        return self.forward(x)[0]

    def _probabilities(self, logits: torch.Tensor) -> np.ndarray:
        probs = torch.softmax(logits, dim=1)[:, self.card.covid_index]
        return probs.numpy().astype(np.float32)

    def predict_tensor(self, x: torch.Tensor) -> np.ndarray:
        """COVID-19 probabilities (float32, shape [N]) of a normalised batch [N, 3, S, S]."""
        return self._probabilities(self.logits(x))

    def score_tensor(self, x: torch.Tensor) -> Scores:
        """Probabilities and the domain check of a normalised batch, from one forward pass."""
        if x.shape[0] == 0:
            empty = np.zeros(0)
            threshold = None if self.domain is None else self.domain.threshold
            return Scores(empty.astype(np.float32), empty, empty.astype(bool), threshold)
        logits, features = self.forward(x)
        n = logits.shape[0]
        if self.domain is None:
            return Scores(
                probabilities=self._probabilities(logits),
                domain_scores=np.full(n, np.nan),
                in_domain=np.ones(n, dtype=bool),
                domain_threshold=None,
            )
        scores = self.domain.score(features.numpy())
        return Scores(
            probabilities=self._probabilities(logits),
            domain_scores=scores,
            in_domain=self.domain.passes(scores),
            domain_threshold=self.domain.threshold,
        )

    def score(self, images: Sequence[np.ndarray] | np.ndarray | torch.Tensor) -> Scores:
        """Like :meth:`predict`, with the domain score and verdict of each image."""
        return self.score_tensor(self._batch(images))

    def _batch(self, images: Sequence[np.ndarray] | np.ndarray | torch.Tensor) -> torch.Tensor:
        if isinstance(images, torch.Tensor):
            return images
        if isinstance(images, np.ndarray) and images.ndim == 2:
            images = [images]
        if len(images) == 0:
            size = self.spec.input_size
            return torch.zeros(0, 3, size, size)
        return torch.stack([to_model_input(np.asarray(im), self.spec) for im in images])

    def predict(self, images: Sequence[np.ndarray] | np.ndarray | torch.Tensor) -> np.ndarray:
        """COVID-19 probability per image.

        ``images``: 2-D float32 [0, 1] MONOCHROME2 arrays (one, or a sequence), preprocessed here
        with the card's spec; or an already normalised tensor [N, 3, S, S].
        """
        batch = self._batch(images)
        if batch.shape[0] == 0:
            return np.zeros(0, dtype=np.float32)
        return self.predict_tensor(batch)

    def warmup(self) -> None:
        """Run one dummy batch so that the first real request does not pay for lazy set-up."""
        size = self.spec.input_size
        self.logits(torch.zeros(1, 3, size, size))
