"""Is an image like the ones the model was validated on? A check on the model's own features.

A classifier gives a confident probability for anything it is shown: a knee, a CT slice, an
inverted or cropped chest film. Such an image is outside the population the operating threshold
was validated on, so its probability means nothing clinically. This module flags those images
(the service then reports the finding as *indeterminate*).

The detector follows Lee et al., "A Simple Unified Framework for Detecting Out-of-Distribution
Samples and Adversarial Attacks" (NeurIPS 2018): the penultimate layer of the network (the
global-average-pooled features right before the classification head) is modelled as one
Gaussian per class with a shared (tied) covariance, fitted on the training split; an image's
**domain score** is its Mahalanobis distance to the nearest class mean. The covariance is
shrunk towards a multiple of the identity (Ledoit-Wolf), because the feature dimension
(512 to 2048) is close to or above the number of training images. To keep what is stored
small, only the top principal axes of the shrunk covariance are kept; the other directions get
their average variance (a probabilistic-PCA form with the same trace), so the distance is
still defined in every direction.

The **threshold** is set on the validation split so that 99 % of its images pass
(:func:`pass_threshold`); an image passes when ``score <= threshold``.

Where it lives: the statistics are an ``.npz`` file beside ``weights.pt`` in the registry
version folder, named in the model card's ``domain_check`` field with its sha256
(:class:`DomainCheckSpec`); a card without the field means "no domain check".

**An ensemble's check** (:mod:`models.ensemble`) is the most cautious of its members' own
checks: an image passes only when it passes every member's. Its features are the members'
features side by side, and its domain score is the largest of the members' scores each divided by
that member's threshold (:class:`EnsembleDomainCheck`), so its threshold is 1. Each member's
statistics stay as fitted with that member; nothing is refitted for the ensemble.
"""

from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.architectures import ensemble_logits
from models.ensemble import Ensemble
from models.files import write_model_file
from models.ood_spec import PASS_FRACTION, DomainCheckSpec

if TYPE_CHECKING:
    from models.card import ModelCard

MAX_COMPONENTS = 128
"""Principal axes of the covariance stored (the rest share one variance); keeps the file small."""

_NPZ_KEYS = ("class_means", "components", "variances", "residual_variance")


# --- features --------------------------------------------------------------------------------
def feature_dim(model: nn.Module, arch: str) -> int:
    """Width of the pooled penultimate features of ``arch`` (512, 2048, 512, 512, 1024, 1280;
    an ensemble's: the sum of its members')."""
    if isinstance(model, Ensemble):
        return sum(feature_dim(member, arch) for member in model.members)
    m: Any = model  # torchvision's attributes, typed loosely by nn.Module
    if arch.startswith("resnet"):
        return int(m.fc.in_features)
    if arch.startswith("squeezenet"):
        return int(m.classifier[1].in_channels)
    if arch.startswith("densenet"):
        return int(m.classifier.in_features)
    if arch.startswith("efficientnet"):
        return int(m._fc.in_features)
    raise ValueError(f"no feature extractor for architecture {arch!r}")


FEATURE_LAYER = {
    "resnet": "global average pool after layer4 (input of fc)",
    "squeezenet": "global average pool of features (input of the 1x1 classifier convolution)",
    "densenet": "global average pool after features + ReLU (input of classifier)",
    "efficientnet": "global average pool after the head convolution + ReLU6 (input of _fc)",
}
"""What "penultimate features" means per architecture family (recorded in the card)."""


class FeaturesAndLogits(nn.Module):
    """``model`` returning ``(logits, features)`` from one forward pass.

    ``logits`` are exactly what ``model(x)`` returns (the same operations in the same order,
    copied from torchvision's ``forward``); ``features`` are the global-average-pooled
    activations the classification head reads, ``[N, D]``. One module with two outputs also
    exports to ONNX as one graph, so the ONNX engine computes both in one run.

    SqueezeNet's head is ``Dropout -> Conv1x1 -> ReLU -> AvgPool``: its logits are not a
    linear function of the pooled features, so the logits come from the feature map and the
    features are pooled beside them.

    An :class:`models.ensemble.Ensemble` gives the ensemble's logits and its members' features
    side by side, ``[N, sum of D]`` (what :class:`EnsembleDomainCheck` reads).
    """

    def __init__(self, model: nn.Module, arch: str) -> None:
        super().__init__()
        if not any(arch.startswith(f) for f in FEATURE_LAYER):
            raise ValueError(f"no feature extractor for architecture {arch!r}")
        self.model = model
        self.arch = arch
        self.members = (
            nn.ModuleList(FeaturesAndLogits(m, arch) for m in model.members)
            if isinstance(model, Ensemble)
            else None
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits [N, C], features [N, D])`` of a normalised batch."""
        if self.members is not None:
            outputs = [member(x) for member in self.members]
            logits = ensemble_logits([out[0] for out in outputs])
            return logits, torch.cat([out[1] for out in outputs], dim=1)
        m: Any = self.model
        if self.arch.startswith("resnet"):
            x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
            x = m.layer4(m.layer3(m.layer2(m.layer1(x))))
            features = torch.flatten(m.avgpool(x), 1)
            return m.fc(features), features
        if self.arch.startswith("squeezenet"):
            fmap = m.features(x)
            features = torch.flatten(F.adaptive_avg_pool2d(fmap, 1), 1)
            return torch.flatten(m.classifier(fmap), 1), features
        if self.arch.startswith("efficientnet"):
            features = m.pooled_features(x)
            return m.classify(features), features
        # densenet
        fmap = F.relu(m.features(x))
        features = torch.flatten(F.adaptive_avg_pool2d(fmap, (1, 1)), 1)
        return m.classifier(features), features


@torch.no_grad()
def extract_features(
    model: nn.Module,
    arch: str,
    batch: torch.Tensor,
    *,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """Logits and pooled features (float32 numpy) of normalised inputs ``[N, 3, S, S]``.

    The model is used in eval mode and left where it was.
    """
    net = FeaturesAndLogits(model, arch)
    was_training = model.training
    model.eval()
    logits, feats = [], []
    try:
        for start in range(0, batch.shape[0], batch_size):
            out, f = net(batch[start : start + batch_size].to(device, torch.float32))
            logits.append(out.float().cpu())
            feats.append(f.float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(logits).numpy(), torch.cat(feats).numpy()


# --- the statistics --------------------------------------------------------------------------
def ledoit_wolf_shrinkage(centered: np.ndarray) -> float:
    """Ledoit-Wolf shrinkage intensity in [0, 1] of the covariance of centred rows ``[n, d]``.

    Same estimate as scikit-learn's ``ledoit_wolf_shrinkage(assume_centered=True)``, written out
    here so that serving machines need no scikit-learn.
    """
    x = np.asarray(centered, dtype=np.float64)
    n, d = x.shape
    if n < 2:
        raise ValueError("need at least 2 samples to estimate a covariance")
    cov = x.T @ x / n
    mu = np.trace(cov) / d
    delta = (np.sum(cov**2) - 2 * mu * np.trace(cov) + d * mu**2) / d  # ||S - mu I||^2 / d
    beta_bar = (np.sum(np.sum(x**2, axis=1) ** 2) - n * np.sum(cov**2)) / (n**2 * d)
    beta = min(beta_bar, delta)
    return 0.0 if delta <= 0 else float(beta / delta)


@dataclass(frozen=True, eq=False)
class ClassGaussians:
    """Class means and a shared covariance in low-rank-plus-isotropic form.

    Covariance ``= V diag(variances) V^T + residual_variance (I - V V^T)`` with ``V`` the rows
    of ``components`` (orthonormal, ``[K, D]``). With ``K == D`` it is the full covariance
    (``residual_variance`` unused).
    """

    class_means: np.ndarray
    """``[C, D]`` float32."""
    components: np.ndarray
    """``[K, D]`` float32, orthonormal rows (principal axes, largest variance first)."""
    variances: np.ndarray
    """``[K]`` float32, the shrunk covariance's variance along each component."""
    residual_variance: float
    """Variance of every direction orthogonal to the components (0 when ``K == D``)."""

    def __post_init__(self) -> None:
        means = np.asarray(self.class_means, dtype=np.float32)
        comps = np.asarray(self.components, dtype=np.float32)
        var = np.asarray(self.variances, dtype=np.float32)
        if means.ndim != 2 or comps.ndim != 2 or var.ndim != 1:
            raise ValueError("class_means and components must be 2-D, variances 1-D")
        if comps.shape[1] != means.shape[1] or comps.shape[0] != var.shape[0]:
            raise ValueError(
                f"shapes do not fit: means {means.shape}, components {comps.shape}, "
                f"variances {var.shape}"
            )
        if not (np.all(np.isfinite(means)) and np.all(np.isfinite(comps))):
            raise ValueError("class means and components must be finite")
        if not np.all(var > 0):
            raise ValueError("variances must be positive")
        partial = comps.shape[0] < comps.shape[1]
        if partial and not (math.isfinite(self.residual_variance) and self.residual_variance > 0):
            raise ValueError("residual_variance must be positive when components are truncated")
        object.__setattr__(self, "class_means", means)
        object.__setattr__(self, "components", comps)
        object.__setattr__(self, "variances", var)
        object.__setattr__(self, "residual_variance", float(self.residual_variance))

    @property
    def dim(self) -> int:
        """Feature dimension ``D``."""
        return int(self.class_means.shape[1])

    def squared_distances(self, features: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distance of each row to each class mean, ``[N, C]`` (float64)."""
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected features [N, {self.dim}], got {x.shape}")
        comps = self.components.astype(np.float64)
        inv_var = 1.0 / self.variances.astype(np.float64)
        out = np.empty((x.shape[0], self.class_means.shape[0]), dtype=np.float64)
        for c, mean in enumerate(self.class_means.astype(np.float64)):
            z = x - mean
            proj = z @ comps.T
            d2 = (proj**2) @ inv_var
            if comps.shape[0] < self.dim:
                rest = np.maximum(np.sum(z**2, axis=1) - np.sum(proj**2, axis=1), 0.0)
                d2 = d2 + rest / self.residual_variance
            out[:, c] = d2
        return out

    def score(self, features: np.ndarray) -> np.ndarray:
        """Domain score per row: Mahalanobis distance to the nearest class mean (float64)."""
        return np.sqrt(self.squared_distances(features).min(axis=1))

    # --- storage ------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """A compressed ``.npz`` of the arrays (what the registry stores)."""
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer,
            class_means=self.class_means,
            components=self.components,
            variances=self.variances,
            residual_variance=np.float64(self.residual_variance),
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> ClassGaussians:
        """Inverse of :meth:`to_bytes` (no pickles are loaded)."""
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            missing = [k for k in _NPZ_KEYS if k not in npz.files]
            if missing:
                raise ValueError(f"domain statistics lack {', '.join(missing)}")
            return cls(
                class_means=npz["class_means"],
                components=npz["components"],
                variances=npz["variances"],
                residual_variance=float(npz["residual_variance"]),
            )


def fit_class_gaussians(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    max_components: int = MAX_COMPONENTS,
    shrinkage: float | None = None,
) -> tuple[ClassGaussians, float]:
    """Class means and the tied, shrunk covariance of ``features`` ``[N, D]`` by class.

    ``shrinkage`` in [0, 1] (default: Ledoit-Wolf on the class-centred features). Returns the
    statistics and the shrinkage used. Every class of ``labels`` needs at least one row.
    """
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"features must be [N, D] and labels [N], got {x.shape}, {y.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("features hold NaN or infinite values")
    if max_components < 1:
        raise ValueError("max_components must be at least 1")
    classes = np.unique(y)
    means = np.stack([x[y == c].mean(axis=0) for c in classes])
    centred = x - means[np.searchsorted(classes, y)]
    if centred.shape[0] - len(classes) < 1:
        raise ValueError("need more images than classes to estimate a covariance")
    alpha = ledoit_wolf_shrinkage(centred) if shrinkage is None else float(shrinkage)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"shrinkage must be in [0, 1], got {alpha}")
    n, d = centred.shape
    cov = centred.T @ centred / n
    mu = float(np.trace(cov) / d)
    if mu <= 0:
        raise ValueError("the features do not vary: no covariance to fit")
    eigval, eigvec = np.linalg.eigh(cov)
    order = np.argsort(eigval)[::-1]
    eigval = np.clip(eigval[order], 0.0, None)
    eigvec = eigvec[:, order]
    shrunk = (1.0 - alpha) * eigval + alpha * mu
    # A variance floor keeps the unshrunk (alpha = 0) case finite along empty directions.
    floor = max(mu * 1e-6, float(np.finfo(np.float32).tiny))
    shrunk = np.maximum(shrunk, floor)
    # Beyond the rank of the class-centred data every direction has the same shrunk variance,
    # which the residual holds exactly: no need to store those axes.
    k = min(max_components, d, max(1, n - len(classes)))
    residual = float(shrunk[k:].mean()) if k < d else 0.0
    stats = ClassGaussians(
        class_means=means,
        components=eigvec[:, :k].T,
        variances=shrunk[:k],
        residual_variance=residual,
    )
    return stats, alpha


def pass_threshold(
    scores: Sequence[float] | np.ndarray, pass_fraction: float = PASS_FRACTION
) -> float:
    """The score limit that lets ``pass_fraction`` of ``scores`` pass (``score <= limit``).

    The ``ceil(pass_fraction * n)``-th smallest score is the last one that must pass; the limit
    is put halfway to the next larger score, so the same images pass when another engine
    (ONNX, GPU) computes the features with rounding differences. With all scores passing
    (``pass_fraction`` 1), the limit is the largest score.
    """
    s = np.sort(np.asarray(scores, dtype=np.float64).ravel())
    if s.size == 0:
        raise ValueError("no scores to set a threshold on")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores hold NaN or infinite values")
    if not 0.0 < pass_fraction <= 1.0:
        raise ValueError(f"pass_fraction must be in (0, 1], got {pass_fraction}")
    k = min(s.size, max(1, math.ceil(pass_fraction * s.size - 1e-9)))
    last = s[k - 1]
    larger = s[k:][s[k:] > last]
    return float((last + larger[0]) / 2.0) if larger.size else float(last)


@dataclass(frozen=True, eq=False)
class DomainCheck:
    """A loaded domain check: statistics plus threshold. ``passes`` means in-domain."""

    stats: ClassGaussians
    threshold: float

    def score(self, features: np.ndarray) -> np.ndarray:
        """Domain score (distance to the nearest class mean) per feature row."""
        return self.stats.score(features)

    def passes(self, scores: np.ndarray) -> np.ndarray:
        """True where the score is within the threshold (the image is in the domain)."""
        return np.asarray(scores) <= self.threshold


@dataclass(frozen=True, eq=False)
class EnsembleDomainCheck:
    """An ensemble's domain check: the most cautious of its members' checks.

    It reads the ensemble's features (the members' side by side, in the card's order). The
    score of an image is ``max_k score_k / threshold_k`` over the members ``k``, so it passes
    (``score <= 1``) exactly when every member's check passes it; a score of 1.3 means the
    image lies 30 % beyond the limit of the member it is furthest outside.
    """

    checks: tuple[DomainCheck, ...]
    threshold: float = 1.0

    def __post_init__(self) -> None:
        if not self.checks:
            raise ValueError("an ensemble's domain check needs its members' checks")
        object.__setattr__(self, "checks", tuple(self.checks))

    def score(self, features: np.ndarray) -> np.ndarray:
        """Largest member score relative to that member's threshold, per image (float64)."""
        x = np.asarray(features)
        dims = [check.stats.dim for check in self.checks]
        if x.ndim != 2 or x.shape[1] != sum(dims):
            raise ValueError(f"expected the members' features [N, {sum(dims)}], got {x.shape}")
        bounds = np.cumsum([0, *dims])
        relative = [
            check.score(x[:, start:stop]) / check.threshold
            for check, start, stop in zip(self.checks, bounds[:-1], bounds[1:], strict=True)
        ]
        return np.max(np.stack(relative), axis=0)

    def passes(self, scores: np.ndarray) -> np.ndarray:
        """True where no member's check fails the image."""
        return np.asarray(scores) <= self.threshold


class DomainCheckError(RuntimeError):
    """A version's domain-check file is missing, corrupted, or does not match its card."""


def load_domain_check(folder: str | Path, spec: DomainCheckSpec) -> DomainCheck:
    """Read ``spec.file`` from a registry version ``folder``, checked against ``spec.sha256``."""
    path = Path(folder) / spec.file
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DomainCheckError(f"domain check file {path} cannot be read: {exc}") from exc
    actual = hashlib.sha256(data).hexdigest()
    if actual != spec.sha256:
        raise DomainCheckError(
            f"domain check file {path} is corrupted or does not belong to this card "
            f"(sha256 {actual}, card says {spec.sha256})"
        )
    try:
        stats = ClassGaussians.from_bytes(data)
    except (ValueError, OSError) as exc:
        raise DomainCheckError(f"domain check file {path} is not readable: {exc}") from exc
    if stats.dim != spec.feature_dim:
        raise DomainCheckError(
            f"domain check file {path} holds {stats.dim}-d statistics, card says {spec.feature_dim}"
        )
    return DomainCheck(stats=stats, threshold=spec.threshold)


# --- fitting ---------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class FittedDomainCheck:
    """What :func:`fit_domain_check` produces: the statistics, its card entry, and the scores."""

    stats: ClassGaussians
    spec: DomainCheckSpec
    train_scores: np.ndarray
    val_scores: np.ndarray

    @property
    def data(self) -> bytes:
        """The ``.npz`` bytes to store as ``spec.file``."""
        return self.stats.to_bytes()

    @property
    def check(self) -> DomainCheck:
        """The check ready to score features."""
        return DomainCheck(self.stats, self.spec.threshold)


def _normalised(gray: torch.Tensor, card: ModelCard) -> torch.Tensor:
    from models.preprocessing import normalise

    size = card.input_size
    if gray.dim() != 4 or gray.shape[1] not in (1, 3) or tuple(gray.shape[2:]) != (size, size):
        raise ValueError(
            f"expected images [N, 1, {size}, {size}] (gray, resized as serving does) or "
            f"[N, 3, {size}, {size}], got {tuple(gray.shape)}"
        )
    if gray.shape[1] == 3:
        return gray.float()
    return normalise(gray.float(), card.preprocess)


def fit_domain_check(
    model: nn.Module,
    card: ModelCard,
    train_images: torch.Tensor,
    train_labels: np.ndarray | torch.Tensor,
    val_images: torch.Tensor,
    *,
    pass_fraction: float = PASS_FRACTION,
    max_components: int = MAX_COMPONENTS,
    device: torch.device | str = "cpu",
    batch_size: int = 64,
    fitted_on: str = "",
    created: str = "",
) -> FittedDomainCheck:
    """Fit the check of ``model`` on training images, set its threshold on validation images.

    Images are the gray ``[N, 1, S, S]`` tensors in [0, 1] of :class:`training.dataset.SplitData`
    (normalised here with the card's spec, as serving does) or already normalised
    ``[N, 3, S, S]`` inputs. The returned spec still needs its file written
    (:func:`save_domain_check`).
    """
    arch = card.architecture
    train_y = np.asarray(
        train_labels.cpu().numpy() if isinstance(train_labels, torch.Tensor) else train_labels
    )
    moved = next(model.parameters()).device
    model.to(device)
    try:
        _, train_f = extract_features(
            model, arch, _normalised(train_images, card), batch_size=batch_size, device=device
        )
        _, val_f = extract_features(
            model, arch, _normalised(val_images, card), batch_size=batch_size, device=device
        )
    finally:
        model.to(moved)
    stats, alpha = fit_class_gaussians(train_f, train_y, max_components=max_components)
    train_scores = stats.score(train_f)
    val_scores = stats.score(val_f)
    threshold = pass_threshold(val_scores, pass_fraction)
    data = stats.to_bytes()
    sha = hashlib.sha256(data).hexdigest()
    family = next(f for f in FEATURE_LAYER if arch.startswith(f))
    spec = DomainCheckSpec(
        threshold=threshold,
        file=f"domain-{sha[:12]}.npz",
        sha256=sha,
        feature_dim=stats.dim,
        components=int(stats.components.shape[0]),
        shrinkage=round(alpha, 6),
        feature_layer=f"{FEATURE_LAYER[family]}, {stats.dim} values",
        threshold_method=(
            f"{pass_fraction * 100:g} % of the {val_scores.size} validation images pass "
            "(score <= threshold), the limit halfway to the next larger validation score"
        ),
        pass_fraction=pass_fraction,
        fitted_on=fitted_on
        or f"{train_y.size} training images (statistics), {val_scores.size} validation images "
        "(threshold)",
        pass_rates={
            "train": round(float(np.mean(train_scores <= threshold)), 4),
            "val": round(float(np.mean(val_scores <= threshold)), 4),
        },
        created=created,
    )
    return FittedDomainCheck(stats, spec, train_scores, val_scores)


def save_domain_check(folder: str | Path, fitted: FittedDomainCheck, card: ModelCard) -> ModelCard:
    """Write the statistics into a registry version ``folder`` and return the updated card.

    The file is content-addressed (``domain-<sha256 prefix>.npz``) and written atomically
    before the card, so a reader never sees a card naming a file that is not there; the
    caller saves the card (:meth:`models.registry.Registry.replace_card`). A previous domain
    file the card no longer names is removed after that, by :func:`remove_stale_domain_files`.
    """
    folder = Path(folder)
    path = folder / fitted.spec.file
    write_model_file(path, fitted.data)
    return card.replace(domain_check=fitted.spec.to_dict())


def remove_stale_domain_files(folder: str | Path, keep: str | None) -> list[Path]:
    """Delete ``domain-*.npz`` files in ``folder`` other than ``keep``; returns what went."""
    removed = []
    for path in Path(folder).glob("domain-*.npz"):
        if path.name != keep:
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
