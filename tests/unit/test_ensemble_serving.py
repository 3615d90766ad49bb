"""An ensemble version in the services: the worker analyses an image with it (probability = the
members' mean, heatmap = the mean of the first ``heatmap_members`` members' maps), the SR's
algorithm parameters say how many members the map used, the node's readiness check and
``deepcovid doctor`` verify every member, and ``deepcovid models ensemble`` builds one."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from pydicom.dataset import Dataset

from common.settings import Settings
from deepcovid.cli import main
from deepcovid.doctor import check_model
from dicom_node.ops.health import ModelCheck
from models.inference import Predictor
from models.occlusion import occlusion_map, resample_to_image
from models.preprocessing import to_model_input
from models.registry import Registry
from tests.harness.factories import wrap_pixels
from worker import pipeline
from worker.analysis import analyse_image
from worker.results import ResultUIDs

WINDOW, STRIDE = 16, 8


@pytest.fixture(autouse=True)
def _two_threads() -> None:
    torch.set_num_threads(2)


def _settings(root: Path, data: Path, heatmap_members: int) -> Settings:
    return Settings(
        data_dir=data,
        model={
            "registry_dir": root,
            "engine": "eager",
            "device": "cpu",
            "occlusion_window": WINDOW,
            "occlusion_stride": STRIDE,
            "heatmap_members": heatmap_members,
        },
    )


def _image() -> np.ndarray:
    rng = np.random.default_rng(3)
    return rng.random((90, 80), dtype=np.float32)


class _NoPrevious:
    """The outbox as ``_build_and_write`` reads it: no earlier SR of this image."""

    def previous_sr(self, job_id: int, version: str) -> None:
        return None


@pytest.mark.parametrize("heatmap_members", [0, 2])
def test_the_worker_analyses_an_image_with_an_ensemble(
    ensemble_root: Path, tmp_path: Path, heatmap_members: int
) -> None:
    settings = _settings(ensemble_root, tmp_path / "data", heatmap_members)
    predictor = Predictor.from_registry(ensemble_root, device="cpu", engine="eager")
    image = _image()
    result = analyse_image(image, predictor, settings)

    used = heatmap_members or 3
    assert result.model_version == "ens" and result.heatmap_members == used
    members = [
        Predictor.from_registry(ensemble_root, f"m{k}", device="cpu", engine="eager")
        for k in (1, 2, 3)
    ]
    probabilities = [float(p.predict(image)[0]) for p in members]
    assert result.probability == pytest.approx(np.mean(probabilities), abs=1e-6)
    x = to_model_input(image, predictor.spec)
    maps = [occlusion_map(p.model, x, window=WINDOW, stride=STRIDE, spec=p.spec) for p in members]
    expected = resample_to_image(
        np.mean(maps[:used], axis=0), image.shape, window=WINDOW, stride=STRIDE, input_size=64
    )
    assert np.allclose(result.heatmap, expected, atol=1e-5)
    assert float(np.abs(expected).max()) > 1e-3

    # The SR's algorithm parameters say what the map used.
    settings.storage.results.mkdir(parents=True, exist_ok=True)
    pixels = (image * 255).astype(np.uint8)
    ds = wrap_pixels(pixels)
    written = pipeline._build_and_write(
        1,
        ds,
        image,
        result,
        predictor,
        ResultUIDs.derive(ds.SOPInstanceUID, result.model_version),
        _NoPrevious(),  # type: ignore[arg-type]
        settings,
    )
    (sr_path,) = [Path(r.path) for r in written if r.kind == "sr"]
    text = _texts(sr_path)
    assert f"heatmap_members={used}" in text and "ensemble_members=3" in text


def _texts(path: Path) -> list[str]:
    from pydicom import dcmread

    values: list[str] = []

    def walk(ds: Dataset) -> None:
        for item in ds.get("ContentSequence", []):
            if "TextValue" in item:
                values.append(str(item.TextValue))
            walk(item)

    walk(dcmread(path))
    return values


def test_readiness_and_doctor_check_every_member(ensemble_root: Path, tmp_path: Path) -> None:
    copy = tmp_path / "registry"
    shutil.copytree(ensemble_root, copy)
    settings = Settings(data_dir=tmp_path / "data", model={"registry_dir": copy})
    assert ModelCheck(copy)().ok
    assert "the 3 members' weights match" in check_model(settings).detail
    member = Registry(copy).card("ens").members[2]
    path = copy / "ens" / member.file
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    result = ModelCheck(copy)()
    assert not result.ok and "weights do not match" in result.detail
    assert check_model(settings).failed


def test_the_ensemble_command(
    ensemble_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "registry"
    shutil.copytree(ensemble_root, copy)
    reg = ["models", "--registry", str(copy)]
    argv = [*reg, "ensemble", "two", "--members", "m2", "m3", "--origins", "fold 1", "fold 2"]
    assert main([*argv, "--threshold", "0.4", "--activate"]) == 0
    assert "two: ensemble of 2 squeezenet1_1 networks (m2, m3), threshold 0.4000" in (
        capsys.readouterr().out
    )
    registry = Registry(copy)
    card = registry.card("two")
    assert registry.active_version() == "two"
    assert [(m.version, m.origin) for m in card.members] == [("m2", "fold 1"), ("m3", "fold 2")]
    assert card.training_command.startswith("deepcovid models ensemble two --members m2 m3")
    # An ensemble's domain check is its members': fitting one on the ensemble is refused.
    assert main([*reg, "fit-domain", "two", "--manifest", str(tmp_path / "m.csv")]) == 2
    assert "is an ensemble" in capsys.readouterr().err
