"""Ensemble versions: the card lists each member's sha256 and the registry checks it, the
probability is the mean of the members', the occlusion map is the mean of the members' maps (and
equals the reference occlusion of the mean probability), the domain check is the most cautious
member's, and members that are not one model are refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from common.paths import CARD_FILE, WEIGHTS_FILE
from models.architectures import build_model, covid_probability, ensemble_logits
from models.card import ModelCard
from models.ensemble import Ensemble
from models.inference import Predictor
from models.occlusion import Method, occlusion_map
from models.ood import (
    EnsembleDomainCheck,
    fit_domain_check,
    save_domain_check,
)
from models.registry import Registry, WeightsIntegrityError, sha256_file
from tests.harness.factories import random_ensemble_registry
from training.ensemble import EnsembleError, build_ensemble, ensemble_card

ATOL = 1e-4


@pytest.fixture(autouse=True)
def _two_threads() -> None:
    torch.set_num_threads(2)


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.random((96 + 8 * i, 80), dtype=np.float32) for i in range(6)]


def test_ensemble_probability_is_the_mean_of_the_members() -> None:
    torch.manual_seed(0)
    logits = [torch.randn(7, 2) * 4 for _ in range(5)]
    mean = torch.stack([covid_probability(z) for z in logits]).mean(0)
    assert torch.allclose(covid_probability(ensemble_logits(logits)), mean, atol=1e-6)
    # Extreme logits neither underflow nor overflow.
    big = [torch.tensor([[200.0, -200.0]]), torch.tensor([[-200.0, 200.0]])]
    assert torch.allclose(covid_probability(ensemble_logits(big)), torch.tensor([0.5]))


def test_card_lists_the_members_with_their_sha256(ensemble_root: Path) -> None:
    registry = Registry(ensemble_root)
    card = registry.card("ens")
    assert card.is_ensemble and registry.active_version() == "ens"
    assert [m.version for m in card.members] == ["m1", "m2", "m3"]
    assert [m.origin for m in card.members] == ["seed 0", "seed 1", "seed 2"]
    folder = registry.path("ens")
    assert not (folder / WEIGHTS_FILE).exists() and card.weights_sha256 == ""
    for member in card.members:
        # The file is the member version's weights, byte for byte.
        assert member.sha256 == sha256_file(folder / member.file)
        assert member.sha256 == registry.card(member.version).weights_sha256
    assert card.architecture == "squeezenet1_1" and card.input_size == 64
    assert card.threshold == pytest.approx(0.5)
    assert "mean of the 3 members' thresholds" in card.threshold_method
    data = json.loads((folder / CARD_FILE).read_text())
    assert [m["sha256"] for m in data["members"]] == [m.sha256 for m in card.members]
    assert ModelCard.from_json(card.to_json()) == card
    # A single-network card does not grow a members field.
    assert "members" not in json.loads(registry.card("m1").to_json())


def test_a_tampered_member_is_refused(ensemble_root: Path, tmp_path: Path) -> None:
    copy = tmp_path / "registry"
    shutil.copytree(ensemble_root, copy)
    registry = Registry(copy)
    member = registry.card("ens").members[1]
    path = registry.path("ens") / member.file
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsIntegrityError, match=r"member seed 1: .* is corrupted"):
        registry.load("ens")
    with pytest.raises(WeightsIntegrityError, match="corrupted"):
        registry.activate("ens")
    path.unlink()
    with pytest.raises(WeightsIntegrityError, match="missing"):
        registry.verify("ens")


def test_inference_is_the_mean_of_the_members(ensemble_root: Path, images: list) -> None:
    ensemble = Predictor.from_registry(ensemble_root, "ens", device="cpu", engine="eager")
    members = [
        Predictor.from_registry(ensemble_root, f"m{k}", device="cpu", engine="eager")
        for k in (1, 2, 3)
    ]
    each = np.stack([p.predict(images) for p in members])
    assert float(each.std(axis=0).max()) > 0.05  # the members disagree: the mean means something
    got = ensemble.predict(images)
    assert np.abs(got - each.mean(axis=0)).max() <= 1e-6
    assert isinstance(ensemble.model, Ensemble) and len(ensemble.model) == 3


def test_every_engine_scores_the_ensemble(ensemble_root: Path, images: list) -> None:
    eager = Predictor.from_registry(ensemble_root, "ens", device="cpu", engine="eager")
    onnx = Predictor.from_registry(ensemble_root, "ens", device="cpu", engine="onnx")
    bf16 = Predictor.from_registry(
        ensemble_root, "ens", device="cpu", engine="eager", precision="bf16"
    )
    reference = eager.predict(images)
    assert np.abs(onnx.predict(images) - reference).max() <= ATOL
    assert np.abs(bf16.predict(images) - reference).max() <= 0.05
    # The ONNX graph is cached under the members' fingerprint, apart from each member's.
    cached = list((ensemble_root / ".cache").glob("model-*.onnx"))
    assert any(p.name.startswith(f"model-{eager.card.weights_fingerprint[:16]}") for p in cached)


def test_the_map_is_the_mean_of_the_members_maps(ensemble_root: Path) -> None:
    model, _ = Registry(ensemble_root).load("ens")
    assert isinstance(model, Ensemble)
    torch.manual_seed(1)
    x = torch.randn(3, 64, 64)

    def heat(m: torch.nn.Module, method: Method = "fast") -> np.ndarray:
        return occlusion_map(m, x, window=16, stride=8, method=method)

    fast = heat(model)
    reference = heat(model, "reference")
    members = [heat(m) for m in model.members]
    assert fast.shape == reference.shape == (7, 7) and fast.dtype == np.float32
    assert float(np.abs(reference).max()) > 1e-3  # the comparison below means something
    assert float(np.abs(fast - reference).max()) <= ATOL
    assert np.allclose(fast, np.mean(members, axis=0), atol=1e-6)
    # Fewer members: the map of the first two members' mean probability.
    two = model.subset(2)
    assert len(two) == 2 and model.subset(0) is model and model.subset(9) is model
    two_fast = heat(two)
    assert np.allclose(two_fast, np.mean(members[:2], axis=0), atol=1e-6)
    two_reference = heat(two, "reference")
    assert float(np.abs(two_fast - two_reference).max()) <= ATOL
    assert float(np.abs(two_fast - fast).max()) > 1e-4  # it is not the full ensemble's map


def _save(registry: Registry, arch: str, version: str, **card: object) -> None:
    torch.manual_seed(0)
    registry.save_version(
        build_model(arch),
        ModelCard(architecture=arch, version=version, **card),  # type: ignore[arg-type]
    )


def test_members_that_are_not_one_model_are_refused(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    _save(registry, "squeezenet1_1", "a")
    _save(registry, "squeezenet1_1", "b")
    _save(registry, "resnet18", "r")
    _save(registry, "squeezenet1_1", "crop", preprocessing={"lung_crop": True})
    _save(registry, "squeezenet1_1", "big", input_size=96)
    with pytest.raises(EnsembleError, match=r"architecture \(a: squeezenet1_1; r: resnet18\)"):
        build_ensemble(registry, "x", ["a", "r"])
    with pytest.raises(EnsembleError, match="differ in preprocess"):
        build_ensemble(registry, "x", ["a", "crop"])
    with pytest.raises(EnsembleError, match="differ in input_size"):
        build_ensemble(registry, "x", ["a", "big"])
    with pytest.raises(EnsembleError, match="at least two"):
        build_ensemble(registry, "x", ["a"])
    with pytest.raises(EnsembleError, match="named twice"):
        build_ensemble(registry, "x", ["a", "a"])
    assert registry.versions() == ["a", "b", "big", "crop", "r"]  # nothing half-made
    build_ensemble(registry, "ab", ["a", "b"], origins=["fold 1", "fold 2"], threshold=0.3)
    card = registry.card("ab")
    assert [m.origin for m in card.members] == ["fold 1", "fold 2"]
    assert card.threshold == 0.3
    with pytest.raises(EnsembleError, match="ab is itself an ensemble"):
        build_ensemble(registry, "y", ["a", "ab"])
    # The card refuses what would make an ensemble ambiguous.
    with pytest.raises(ValueError, match="no weights_sha256"):
        card.replace(weights_sha256="0" * 64)
    with pytest.raises(ValueError, match="at least two members"):
        card.replace(members=[card.members[0].to_dict()])
    with pytest.raises(ValueError, match="save_ensemble"):
        registry.save_version(build_model("squeezenet1_1"), card.replace(version="z"))


def _fit_check(registry: Registry, version: str, seed: int) -> None:
    """Fit and store ``version``'s domain check on random gray images."""
    model, card = registry.load(version)
    gen = torch.Generator().manual_seed(seed)
    size = card.input_size
    train = torch.rand(40, 1, size, size, generator=gen)
    labels = np.arange(40) % 2
    val = torch.rand(20, 1, size, size, generator=gen)
    fitted = fit_domain_check(model, card, train, labels, val, max_components=8)
    registry.replace_card(save_domain_check(registry.path(version), fitted, card))


def test_the_domain_check_is_the_most_cautious_members(tmp_path: Path, images: list) -> None:
    root = random_ensemble_registry(tmp_path / "reg", members=2, name="plain")
    registry = Registry(root)
    for k, version in enumerate(("m1", "m2")):
        _fit_check(registry, version, k)
    build_ensemble(registry, "checked", ["m1", "m2"])
    card = registry.card("checked")
    assert all(m.domain_check is not None for m in card.members)
    check = registry.domain_check("checked")
    assert isinstance(check, EnsembleDomainCheck) and check.threshold == 1.0

    ensemble = Predictor.from_registry(root, "checked", device="cpu", engine="eager")
    members = [Predictor.from_registry(root, v, device="cpu", engine="eager") for v in ("m1", "m2")]
    # Bright, flat and inverted images lie outside random training noise for some members.
    probes = [*images, np.ones((64, 64), np.float32), np.zeros((70, 60), np.float32)]
    scores = ensemble.score(probes)
    each = [p.score(probes) for p in members]
    relative = np.max([s.domain_scores / s.domain_threshold for s in each], axis=0)
    assert np.allclose(scores.domain_scores, relative, rtol=1e-6)
    assert scores.domain_threshold == 1.0
    assert np.array_equal(scores.in_domain, np.logical_and(*[s.in_domain for s in each]))
    assert not scores.in_domain.all()  # the verdicts below are not all "passed"
    assert np.abs(scores.probabilities - np.mean([s.probabilities for s in each], 0)).max() < 1e-6

    # Either every member has a check or none: a mix is refused.
    with pytest.raises(EnsembleError, match="m1 have a domain check and plain-less have none"):
        _save_unchecked_and_mix(registry)
    assert registry.domain_check("plain") is None


def _save_unchecked_and_mix(registry: Registry) -> None:
    model, card = registry.load("m1")
    plain = card.replace(version="plain-less", domain_check=None, weights_sha256="")
    registry.save_version(model, plain)
    build_ensemble(registry, "mixed", ["m1", "plain-less"])


def test_ensemble_card_without_a_registry() -> None:
    """The card function alone: origins default to each card's fold and seed."""
    base = ModelCard(architecture="resnet18", weights_sha256="1" * 64, threshold=0.2)
    cards = [
        base.replace(version="f1", training_parameters={"fold": 1, "seed": 0}),
        base.replace(version="f2", training_parameters={"fold": 2, "seed": 0}, threshold=0.4),
    ]
    card = ensemble_card(cards, version="cv")
    assert [m.origin for m in card.members] == ["fold 1, seed 0", "fold 2, seed 0"]
    # A kept cross-validation fold model says its fold in its version name.
    kept = [base.replace(version=f"r-f{k}-s3", training_parameters={"seed": 3}) for k in (0, 1)]
    assert [m.origin for m in ensemble_card(kept).members] == ["fold 0, seed 3", "fold 1, seed 3"]
    assert card.threshold == pytest.approx(0.3)
    with pytest.raises(EnsembleError, match="3 origins given for 2 members"):
        ensemble_card(cards, origins=["a", "b", "c"])
