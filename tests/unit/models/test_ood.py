"""The domain check: threshold rule, Mahalanobis statistics, card field, registry file, predictor.

Synthetic Gaussian features check the statistics against the textbook formula; a randomly
initialised SqueezeNet in a temporary registry checks that the predictor reports the domain
score from the same forward pass (eager and ONNX agree) and that old cards mean "no check".
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from models.architectures import ARCHITECTURES, build_model
from models.card import ModelCard
from models.inference import Predictor
from models.ood import (
    ClassGaussians,
    DomainCheckError,
    DomainCheckSpec,
    FeaturesAndLogits,
    feature_dim,
    fit_class_gaussians,
    fit_domain_check,
    ledoit_wolf_shrinkage,
    load_domain_check,
    pass_threshold,
    remove_stale_domain_files,
    save_domain_check,
)
from models.registry import CARD_FILE, Registry, WeightsIntegrityError


@pytest.fixture(autouse=True)
def _two_threads() -> None:
    torch.set_num_threads(2)


# --- the threshold rule ---------------------------------------------------------------------
@pytest.mark.parametrize("n", [100, 214, 1000, 1001])
def test_threshold_lets_99_percent_of_scores_pass(n: int) -> None:
    scores = np.random.default_rng(n).gamma(4.0, 2.0, size=n)
    t = pass_threshold(scores, 0.99)
    passed = int(np.sum(scores <= t))
    assert passed == int(np.ceil(0.99 * n))  # at least 99 %, and not one more than needed
    assert passed / n >= 0.99


def test_threshold_sits_halfway_to_the_next_score() -> None:
    scores = np.arange(1.0, 101.0)  # 1..100: the 99th must pass, the 100th must not
    assert pass_threshold(scores, 0.99) == pytest.approx(99.5)
    assert pass_threshold(scores, 1.0) == 100.0
    assert pass_threshold([5.0, 5.0, 5.0], 0.5) == 5.0  # ties: all equal scores pass together


@pytest.mark.parametrize(
    ("scores", "fraction", "message"),
    [([], 0.99, "no scores"), ([1.0, np.nan], 0.99, "NaN"), ([1.0], 0.0, "pass_fraction")],
)
def test_threshold_refuses_bad_input(scores: list[float], fraction: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        pass_threshold(scores, fraction)


# --- Mahalanobis on synthetic Gaussian features -------------------------------------------------
def _gaussian_classes(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two classes, shifted means, one shared anisotropic covariance; returns x, y, cov."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(np.random.default_rng(99).normal(size=(d, d)))
    cov = basis @ np.diag(np.linspace(4.0, 0.05, d)) @ basis.T
    means = np.stack([np.zeros(d), np.full(d, 1.5)])
    y = rng.integers(0, 2, size=n)
    x = means[y] + rng.multivariate_normal(np.zeros(d), cov, size=n)
    return x, y, cov


def test_mahalanobis_matches_the_formula_with_all_components() -> None:
    x, y, _ = _gaussian_classes(3000, 12, seed=0)
    stats, alpha = fit_class_gaussians(x, y, max_components=12, shrinkage=0.1)
    assert alpha == 0.1
    means = np.stack([x[y == c].mean(0) for c in (0, 1)])
    centred = x - means[y]
    cov = centred.T @ centred / len(x)
    shrunk = 0.9 * cov + 0.1 * np.trace(cov) / 12 * np.eye(12)
    inv = np.linalg.inv(shrunk)
    probe = np.random.default_rng(1).normal(size=(5, 12)) * 3
    expected = np.stack([np.einsum("ij,jk,ik->i", probe - m, inv, probe - m) for m in means], 1)
    assert np.allclose(stats.squared_distances(probe), expected, rtol=1e-4)
    assert np.allclose(stats.score(probe), np.sqrt(expected.min(1)), rtol=1e-4)


@pytest.mark.parametrize("components", [40, 16])
def test_in_distribution_passes_and_a_far_point_fails(components: int) -> None:
    d = 40
    x, y, cov = _gaussian_classes(4000, d, seed=2)
    val, _, _ = _gaussian_classes(1000, d, seed=3)
    fresh, fresh_y, _ = _gaussian_classes(2000, d, seed=4)
    stats, alpha = fit_class_gaussians(x, y, max_components=components)
    assert 0.0 <= alpha < 0.2
    t = pass_threshold(stats.score(val))
    assert np.mean(stats.score(fresh) <= t) > 0.97  # new in-distribution samples pass
    # A class mean is as in-domain as it gets.
    assert stats.score(stats.class_means).max() < np.percentile(stats.score(val), 1)
    eigval, eigvec = np.linalg.eigh(cov)  # ascending
    base = fresh[fresh_y == 0][:1]
    # Far along the direction of largest variance, and far from both class means.
    assert stats.score(base + 8 * np.sqrt(eigval[-1]) * eigvec[:, -1])[0] > t
    assert stats.score(np.full((1, d), 40.0))[0] > t
    if components == d:
        # Off the data's plane: a small Euclidean step along the smallest-variance axis is
        # many standard deviations away (what Euclidean distances would miss).
        step = 2.0 * eigvec[:, 0]
        assert np.linalg.norm(step) == pytest.approx(2.0)
        assert stats.score(base + step)[0] > t


def test_ledoit_wolf_shrinkage_agrees_with_scikit_learn() -> None:
    sklearn_cov = pytest.importorskip("sklearn.covariance")
    x = np.random.default_rng(5).normal(size=(60, 200)) * np.linspace(0.1, 3, 200)
    x -= x.mean(0)
    expected = sklearn_cov.ledoit_wolf_shrinkage(x, assume_centered=True)
    assert ledoit_wolf_shrinkage(x) == pytest.approx(expected, rel=1e-6)


def test_statistics_round_trip_through_npz_bytes() -> None:
    x, y, _ = _gaussian_classes(500, 10, seed=6)
    stats, _ = fit_class_gaussians(x, y, max_components=4)
    again = ClassGaussians.from_bytes(stats.to_bytes())
    probe = x[:7]
    assert np.array_equal(again.score(probe), stats.score(probe))
    with pytest.raises(ValueError, match="features"):
        stats.score(np.zeros((2, 11)))


# --- features ---------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_features_and_logits_is_the_model_plus_its_pooled_features(arch: str) -> None:
    torch.manual_seed(0)
    model = build_model(arch).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        logits, features = FeaturesAndLogits(model, arch)(x)
        expected = model(x)
    assert torch.equal(logits, expected)  # the same operations: bit for bit
    assert features.shape == (2, feature_dim(model, arch))


# --- the card field -----------------------------------------------------------------------------
def _spec(**kw: object) -> DomainCheckSpec:
    data: dict[str, object] = {
        "threshold": 17.5,
        "file": "domain-0123456789ab.npz",
        "sha256": "ab" * 32,
        "feature_dim": 512,
        "components": 128,
        "shrinkage": 0.004,
        "pass_rates": {"val": 0.99},
    }
    data.update(kw)
    return DomainCheckSpec(**data)  # type: ignore[arg-type]


def test_card_round_trip_with_and_without_a_domain_check() -> None:
    plain = ModelCard(architecture="squeezenet1_1")
    assert plain.domain_check is None
    assert "domain_check" not in json.loads(plain.to_json())  # old readers still read it
    assert ModelCard.from_json(plain.to_json()) == plain
    checked = plain.replace(domain_check=_spec().to_dict())
    assert isinstance(checked.domain_check, DomainCheckSpec)
    again = ModelCard.from_json(checked.to_json())
    assert again == checked and again.domain_check == _spec()
    assert json.loads(checked.to_json())["domain_check"]["threshold"] == 17.5
    # An old card (written before the field existed) loads and means "no domain check".
    old = json.loads(plain.to_json())
    assert ModelCard.from_dict(old).domain_check is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"threshold": -1.0}, "threshold"),
        ({"file": "../weights.pt"}, "file"),
        ({"sha256": "xyz"}, "sha256"),
        ({"components": 513}, "components"),
        ({"colour": "blue"}, "unknown domain_check fields: colour"),
    ],
)
def test_card_refuses_a_bad_domain_check(change: dict[str, object], message: str) -> None:
    data = {**_spec().to_dict(), **change}
    with pytest.raises((ValueError, TypeError), match=message):
        ModelCard(architecture="squeezenet1_1").replace(domain_check=data)


# --- registry and predictor -------------------------------------------------------------------
def _blobs(n: int, seed: int, size: int = 96) -> torch.Tensor:
    """Gray [N, 1, S, S] images in [0, 1]: smooth random blobs (chest-like enough for a test)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    images = []
    for _ in range(n):
        cy, cx, r = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.1, 0.3)
        img = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / r**2) * rng.uniform(0.5, 1.0)
        images.append(img + rng.normal(0, 0.02, img.shape))
    return torch.from_numpy(np.clip(np.stack(images), 0, 1).astype(np.float32))[:, None]


@pytest.fixture(scope="module")
def checked_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random SqueezeNet 1.1 (input 64) with a domain check fitted on blob images."""
    root = tmp_path_factory.mktemp("registry")
    torch.manual_seed(0)
    model = build_model("squeezenet1_1")
    registry = Registry(root)
    card = ModelCard(architecture="squeezenet1_1", input_size=64)
    train = _blobs(80, seed=0, size=64)  # at the card's input size, as SplitData holds them
    fitted = fit_domain_check(
        model, card, train, np.arange(80) % 2, _blobs(40, seed=1, size=64), max_components=32
    )
    version = registry.save_version(
        model, card.replace(domain_check=fitted.spec), {fitted.spec.file: fitted.data}
    )
    registry.activate(version)
    return root


def test_registry_saves_and_checks_the_domain_file(checked_registry: Path, tmp_path: Path) -> None:
    registry = Registry(checked_registry)
    card = registry.verify("v0001")
    assert card.domain_check is not None and card.domain_check.pass_rates["val"] >= 0.99
    folder = registry.path("v0001")
    check = load_domain_check(folder, card.domain_check)
    assert check.threshold == card.domain_check.threshold
    # A corrupted domain file is refused, like corrupted weights.
    copy = tmp_path / "copy"
    import shutil

    shutil.copytree(checked_registry, copy)
    broken = Registry(copy)
    (broken.path("v0001") / card.domain_check.file).write_bytes(b"not npz")
    with pytest.raises(WeightsIntegrityError, match="domain check file"):
        broken.load("v0001")
    with pytest.raises(DomainCheckError, match="corrupted"):
        load_domain_check(broken.path("v0001"), card.domain_check)


def test_refitting_replaces_the_file_and_the_card(checked_registry: Path, tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "refit"
    shutil.copytree(checked_registry, root)
    registry = Registry(root)
    model, card = registry.load("v0001")
    folder = registry.path("v0001")
    old_file = card.domain_check.file  # type: ignore[union-attr]
    train, val = _blobs(60, seed=7, size=64), _blobs(30, seed=8, size=64)
    fitted = fit_domain_check(model, card, train, np.arange(60) % 2, val, max_components=8)
    updated = save_domain_check(folder, fitted, card)
    updated.save(folder / CARD_FILE)
    remove_stale_domain_files(folder, keep=fitted.spec.file)
    assert fitted.spec.file != old_file and not (folder / old_file).exists()
    assert registry.verify("v0001").domain_check == fitted.spec
    assert updated.weights_sha256 == card.weights_sha256  # the weights did not change


@pytest.mark.parametrize("engine", ["eager", "onnx"])
def test_predictor_reports_domain_scores(checked_registry: Path, engine: str) -> None:
    predictor = Predictor.from_registry(checked_registry, engine=engine, device="cpu")
    assert predictor.domain is not None
    blobs = [im[0].numpy() for im in _blobs(6, seed=2)]
    noise = [np.random.default_rng(3).random((96, 96), dtype=np.float32)]
    scores = predictor.score(blobs + noise)
    assert scores.probabilities.shape == scores.domain_scores.shape == scores.in_domain.shape
    assert np.array_equal(scores.probabilities, predictor.predict(blobs + noise))
    assert np.all(np.isfinite(scores.domain_scores))
    assert scores.domain_threshold == predictor.domain.threshold
    assert np.array_equal(scores.in_domain, scores.domain_scores <= scores.domain_threshold)
    assert scores.in_domain[:6].mean() >= 0.5  # like the training images
    assert scores.domain_scores[6] > np.median(scores.domain_scores[:6])  # noise is farther
    assert predictor.score([]).in_domain.shape == (0,)


def test_eager_and_onnx_agree_on_domain_scores(checked_registry: Path) -> None:
    images = [im[0].numpy() for im in _blobs(5, seed=4)]
    eager = Predictor.from_registry(checked_registry, engine="eager", device="cpu").score(images)
    onnx = Predictor.from_registry(checked_registry, engine="onnx", device="cpu").score(images)
    assert np.allclose(onnx.domain_scores, eager.domain_scores, rtol=1e-4)
    assert np.abs(onnx.probabilities - eager.probabilities).max() <= 1e-4


def test_a_model_without_a_check_passes_everything(tmp_path: Path) -> None:
    torch.manual_seed(1)
    registry = Registry(tmp_path)
    registry.activate(
        registry.save_version(build_model("squeezenet1_1"), ModelCard("squeezenet1_1"))
    )
    predictor = Predictor.from_registry(tmp_path, engine="eager", device="cpu")
    scores = predictor.score([np.zeros((64, 64), dtype=np.float32)])
    assert predictor.domain is None and scores.domain_threshold is None
    assert np.isnan(scores.domain_scores).all() and scores.in_domain.all()
