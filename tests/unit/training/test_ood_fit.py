"""The OOD check at training time: ``train`` saves it with the version, ``fit-domain`` adds it.

A tiny manifest of real chest X-rays (a few per split and class, at 64 px) keeps this quick.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from models.card import ModelCard
from models.registry import Registry
from tests.harness.factories import CXR_DIR, random_registry
from training.__main__ import main as training_main
from training.dataset import SplitData
from training.manifest import read_manifest
from training.ood_fit import fit_for_release

PER_CLASS = {"train": 6, "val": 4}


@pytest.fixture(autouse=True)
def _two_threads() -> None:
    torch.set_num_threads(2)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first few images per split and class of the shared manifest (absolute paths)."""
    with (CXR_DIR / "manifest.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    picked = [
        r
        for split, n in PER_CLASS.items()
        for label in ("covid", "non_covid")
        for r in [r for r in rows if r["split"] == split and r["label"] == label][:n]
    ]
    path = tmp_path_factory.mktemp("manifest") / "manifest.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "label", "split", "source"])
        writer.writeheader()
        for r in picked:
            writer.writerow(
                {
                    "path": str(CXR_DIR / r["path"]),
                    "label": r["label"],
                    "split": r["split"],
                    "source": r["source"],
                }
            )
    return path


def _small_registry(root: Path) -> Path:
    """A random SqueezeNet 1.1 at 64 px (the test's images are resized to 64 as well)."""
    random_registry(root)
    registry = Registry(root)
    card = registry.card("v0001")
    model, _ = registry.load("v0001")
    version = registry.save_version(model, card.replace(version="v0002", input_size=64))
    registry.activate(version)
    return root


def test_fit_domain_adds_and_replaces_a_check(manifest: Path, tmp_path: Path) -> None:
    root = _small_registry(tmp_path / "registry")
    args = ["fit-domain", "--manifest", str(manifest), "--registry", str(root), "--device", "cpu"]
    assert training_main([*args, "--load-workers", "1"]) == 0
    registry = Registry(root)
    card = registry.verify("v0002")  # the domain file matches the card
    spec = card.domain_check
    assert spec is not None and spec.feature_dim == 512
    assert spec.components == 12 - 2  # the rank of 12 class-centred training images
    assert spec.pass_rates["val"] >= 0.99 and "manifest.csv" in spec.fitted_on
    assert (registry.path("v0002") / spec.file).is_file()
    assert registry.card("v0001").domain_check is None  # only the version asked for
    # Again on other images (one training image fewer): the new file replaces the old one.
    lines = manifest.read_text().splitlines()
    other = tmp_path / "other.csv"
    other.write_text("\n".join(lines[:1] + lines[2:]) + "\n")
    again = ["fit-domain", "v0002", "--manifest", str(other), "--registry", str(root)]
    assert training_main([*again, "--device", "cpu", "--load-workers", "1"]) == 0
    new = registry.verify("v0002").domain_check
    assert new is not None and new.file != spec.file
    assert [p.name for p in registry.path("v0002").glob("domain-*.npz")] == [new.file]


def test_train_saves_the_version_with_its_check(manifest: Path, tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    flags = ["--arch", "squeezenet1_1", "--input-size", "64", "--batch-size", "4", "--epochs", "1"]
    flags += ["--augment", "none", "--covid-copies", "1", "--threads", "2", "--no-progress"]
    flags += ["--load-workers", "1", "--run-dir", str(tmp_path / "run"), "--version", "one"]
    assert (
        training_main(["train", "--manifest", str(manifest), "--registry", str(registry), *flags])
        == 0
    )
    card = Registry(registry).verify("one")
    assert card.domain_check is not None
    assert (Registry(registry).path("one") / card.domain_check.file).is_file()


def test_a_check_that_cannot_be_fitted_does_not_lose_the_run(manifest: Path) -> None:
    from models.architectures import build_model

    rows = read_manifest(manifest).split("train")[:1]
    one = SplitData(torch.rand(1, 1, 64, 64), torch.tensor([1]), rows)
    card = ModelCard(architecture="squeezenet1_1", input_size=64)
    updated, files = fit_for_release(
        build_model("squeezenet1_1"), card, one, one, read_manifest(manifest)
    )
    assert updated == card and files == {}
    assert np.isfinite(card.threshold)
