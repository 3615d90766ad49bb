"""One preprocessing path: manifest JPEGs and the same pixels wrapped in DICOM (8-bit
MONOCHROME2, 16-bit scaled, inverted MONOCHROME1, windowed, VOI LUT, signed) give the same model
input within 1/255, also with lung crop, lung mask and equalisation; the real CR gives the same
array from its three transfer syntaxes; old model cards load with the preprocessing they had."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from models.card import ModelCard
from models.dicom_pixels import PixelDataError, dicom_to_array
from models.lungs import lung_fields
from models.preprocessing import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PreprocessSpec,
    clahe,
    equalise_hist,
    load_image_file,
    model_input_box,
    normalise,
    prepare_gray,
    resize_image,
    to_model_input,
)
from tests.harness.factories import CXR_DIR, DICOM_DIR, load_cxr, wrap_pixels

TOL = 1.0 / 255.0


@pytest.fixture(scope="module")
def cxr() -> tuple[Path, np.ndarray]:
    """A manifest image (path, uint8 pixels)."""
    with open(CXR_DIR / "manifest.csv", newline="") as fh:
        rel = next(row["path"] for row in csv.DictReader(fh) if row["split"] == "test")
    return CXR_DIR / rel, load_cxr(rel)


def _roundtrip(ds: Dataset, tmp_path: Path) -> Dataset:
    path = tmp_path / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return pydicom.dcmread(path)


def _voi_lut_variant(p: np.ndarray) -> Dataset:
    """12-bit stored values p*16 with a VOI LUT sequence mapping them back to 0..255."""
    ds = wrap_pixels((p.astype(np.uint16) * 16), bits_stored=12)
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 16]
    item.add_new(0x00283006, "US", [min(i // 16, 255) for i in range(4096)])  # LUT Data
    ds.VOILUTSequence = Sequence([item])
    return ds


def _variants(p: np.ndarray) -> dict[str, Dataset]:
    p16 = p.astype(np.uint16) * 257  # 0..255 -> 0..65535
    return {
        "8-bit MONOCHROME2": wrap_pixels(p),
        "16-bit": wrap_pixels(p16),
        "16-bit rescaled": wrap_pixels(p16, rescale=(2.0, -1000.0)),
        "16-bit MONOCHROME1": wrap_pixels(
            (65535 - p16).astype(np.uint16), photometric="MONOCHROME1"
        ),
        "12-bit windowed MONOCHROME1": wrap_pixels(
            (4095 - p.astype(np.uint16) * 16).astype(np.uint16),
            bits_stored=12,
            photometric="MONOCHROME1",
            window=(4095 - 2040.5, 4081),
        ),
        "16-bit signed": wrap_pixels(
            (p.astype(np.int32) * 257 - 32768).astype(np.int16), signed=True
        ),
        "12-bit VOI LUT": _voi_lut_variant(p),
    }


def test_jpeg_and_dicom_variants_give_the_same_input(
    cxr: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    path, pixels = cxr
    image = load_image_file(path)
    assert image.dtype == np.float32 and image.shape == pixels.shape
    assert np.array_equal(image, pixels.astype(np.float32) / 255)
    expected = to_model_input(image)
    assert expected.shape == (3, 224, 224)
    for name, ds in _variants(pixels).items():
        array = dicom_to_array(_roundtrip(ds, tmp_path))
        assert array.dtype == np.float32 and array.shape == pixels.shape, name
        assert float(np.abs(array - image).max()) <= TOL, name
        tensor = to_model_input(array)
        assert float((tensor - expected).abs().max()) <= TOL, name


def test_monochrome1_is_inverted() -> None:
    ramp = np.tile(np.arange(0, 256, dtype=np.uint8), (4, 1))
    m2 = dicom_to_array(wrap_pixels(ramp))
    m1 = dicom_to_array(wrap_pixels(ramp, photometric="MONOCHROME1"))
    assert m2[0, 0] == 0.0 and m2[0, -1] == 1.0
    assert np.allclose(m1, 1.0 - m2)


def test_window_clips_outside_values() -> None:
    ramp = np.tile(np.arange(0, 4096, 16, dtype=np.uint16), (2, 1))
    out = dicom_to_array(wrap_pixels(ramp, bits_stored=12, window=(2048, 1024)))
    assert out.min() == 0.0 and out.max() == 1.0
    assert np.all(out[:, ramp[0] < 1536] == 0.0) and np.all(out[:, ramp[0] > 2560] == 1.0)
    mid = out[0, list(ramp[0]).index(2048)]
    assert abs(mid - 0.5) < 0.01


def test_caller_dataset_is_not_modified() -> None:
    ds = wrap_pixels(np.zeros((4, 4), np.uint16), rescale=(2.0, -10.0), window=(0, 100))
    before = (ds.RescaleSlope, ds.RescaleIntercept, ds.WindowCenter, ds.WindowWidth)
    dicom_to_array(ds)
    assert (ds.RescaleSlope, ds.RescaleIntercept, ds.WindowCenter, ds.WindowWidth) == before
    assert isinstance(ds.RescaleSlope, pydicom.valuerep.DSfloat)


def test_colour_and_missing_pixels_are_refused() -> None:
    ds = wrap_pixels(np.zeros((4, 4), np.uint8))
    ds.PhotometricInterpretation = "RGB"
    with pytest.raises(PixelDataError, match="PhotometricInterpretation RGB"):
        dicom_to_array(ds)
    del ds.PixelData
    with pytest.raises(PixelDataError, match="no Pixel Data"):
        dicom_to_array(ds)


@pytest.fixture(scope="module")
def real_cr() -> dict[str, np.ndarray]:
    return {
        name: dicom_to_array(pydicom.dcmread(DICOM_DIR / f"RG1_{name}.dcm"))
        for name in ("UNCR", "J2KR", "J2KI")
    }


def test_real_cr_same_array_from_three_transfer_syntaxes(real_cr: dict[str, np.ndarray]) -> None:
    uncompressed = real_cr["UNCR"]
    assert uncompressed.shape == (1955, 1841) and uncompressed.dtype == np.float32
    assert np.array_equal(uncompressed, real_cr["J2KR"])  # lossless
    lossy = np.abs(uncompressed - real_cr["J2KI"])
    assert float(lossy.max()) < 0.02 and float(lossy.mean()) < 0.003
    # The model inputs agree closer still (resizing averages the compression noise).
    diff = (to_model_input(uncompressed) - to_model_input(real_cr["J2KI"])).abs()
    assert float(diff.max()) < 0.02


def test_real_cr_is_windowed_and_inverted(real_cr: dict[str, np.ndarray]) -> None:
    """15-bit MONOCHROME1 with window 15000/30000: out = 1 - LINEAR window of the stored value."""
    ds = pydicom.dcmread(DICOM_DIR / "RG1_UNCR.dcm")
    stored = ds.pixel_array.astype(np.float64)
    center, width = float(ds.WindowCenter), float(ds.WindowWidth)
    windowed = np.clip((stored - (center - 0.5)) / (width - 1) + 0.5, 0, 1)
    assert np.allclose(real_cr["UNCR"], 1 - windowed, atol=1e-5)


def test_real_nih_dx_is_pixels_over_255() -> None:
    ds = pydicom.dcmread(DICOM_DIR / "nih_chestxray_DX_nhsx_test.dcm")
    assert np.array_equal(dicom_to_array(ds), ds.pixel_array.astype(np.float32) / 255)


def test_model_input_normalisation_and_resize() -> None:
    gray = np.full((300, 200), 0.5, np.float32)
    x = to_model_input(gray)
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32
    for c in range(3):
        assert torch.allclose(x[c], torch.tensor((0.5 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]))
    spec = PreprocessSpec(input_size=64, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    ramp = np.tile(np.linspace(0, 1, 128, dtype=np.float32), (128, 1))
    y = to_model_input(ramp, spec)
    assert y.shape == (3, 64, 64)
    assert torch.equal(y, normalise(resize_image(ramp, 64), spec))
    assert -1.0 <= float(y.min()) < -0.9 and 0.9 < float(y.max()) <= 1.0
    assert PreprocessSpec.from_dict(spec.to_dict()) == spec


def test_out_of_range_or_wrong_shape_is_refused() -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        to_model_input(np.full((8, 8), 255, np.float32))
    with pytest.raises(ValueError, match="2-D"):
        to_model_input(np.zeros((8, 8, 3), np.float32))


def test_load_image_file_16_bit_png_and_transparency(tmp_path: Path) -> None:
    values = np.array([[0, 65535], [32768, 1000]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "a.png")
    assert np.allclose(load_image_file(tmp_path / "a.png"), values / 65535)
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., :3] = 255
    rgba[0, 0, 3] = 255  # one opaque white pixel, the rest transparent (-> black)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "b.png")
    assert np.array_equal(load_image_file(tmp_path / "b.png"), [[1, 0], [0, 0]])


OPTION_SPECS: dict[str, PreprocessSpec] = {
    "lung_crop": PreprocessSpec(lung_crop=True),
    "lung_mask": PreprocessSpec(lung_mask=True),
    "hist": PreprocessSpec(equalise="hist"),
    "clahe": PreprocessSpec(equalise="clahe"),
    "crop+mask+clahe": PreprocessSpec(lung_crop=True, lung_mask=True, equalise="clahe"),
    "crop+mask+hist": PreprocessSpec(lung_crop=True, lung_mask=True, equalise="hist"),
    "crop heuristic": PreprocessSpec(lung_crop=True, lung_finder="heuristic"),
}


@pytest.mark.parametrize("option", sorted(OPTION_SPECS))
def test_options_give_the_same_input_from_jpeg_and_dicom(
    option: str, cxr: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    spec = OPTION_SPECS[option]
    path, pixels = cxr
    image = load_image_file(path)
    expected = to_model_input(image, spec)
    assert expected.shape == (3, 224, 224) and torch.isfinite(expected).all()
    assert not torch.equal(expected, to_model_input(image))  # the option changes something
    for name, ds in _variants(pixels).items():
        tensor = to_model_input(dicom_to_array(_roundtrip(ds, tmp_path)), spec)
        assert float((tensor - expected).abs().max()) <= TOL, (option, name)


@pytest.mark.parametrize("finder", ["learned", "heuristic"])
def test_options_run_in_order_and_match_the_steps(
    finder: str, cxr: tuple[Path, np.ndarray]
) -> None:
    """crop to the lung box with its margin, equalise the crop, gray outside the dilated mask."""
    image = load_image_file(cxr[0])
    fields = lung_fields(image, finder)
    assert not fields.fallback
    top, bottom, left, right = fields.box_with_margin(0.08)
    crop = image[top:bottom, left:right]
    spec = PreprocessSpec(lung_crop=True, equalise="clahe", lung_finder=finder)
    assert torch.equal(prepare_gray(image, spec), resize_image(clahe(crop), 224))
    assert model_input_box(image, spec) == (top, bottom, left, right)
    assert model_input_box(image, PreprocessSpec()) == (0, image.shape[0], 0, image.shape[1])
    masked = prepare_gray(
        image, PreprocessSpec(lung_mask=True, input_size=image.shape[0], lung_finder=finder)
    )
    assert masked.shape == (1, image.shape[0], image.shape[0])
    corner = masked[0, :4, :4]  # far outside any lung: mid-gray
    assert torch.allclose(corner, torch.full_like(corner, 0.5))


def test_default_spec_is_the_plain_resize(cxr: tuple[Path, np.ndarray]) -> None:
    image = load_image_file(cxr[0])
    assert torch.equal(prepare_gray(image), resize_image(image, 224))
    assert torch.equal(to_model_input(image), normalise(resize_image(image, 224)))


def test_spec_round_trips_and_old_cards_load() -> None:
    for spec in [PreprocessSpec(), *OPTION_SPECS.values()]:
        assert PreprocessSpec.from_dict(spec.to_dict()) == spec
    custom = PreprocessSpec(
        input_size=96, lung_crop=True, equalise="hist", crop_margin=0.1, mask_margin=0.0
    )
    assert PreprocessSpec.from_dict(custom.to_dict()) == custom
    old = {"input_size": 224, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    loaded = PreprocessSpec.from_dict(old)
    assert loaded == PreprocessSpec()
    assert not loaded.lung_crop and not loaded.lung_mask and loaded.equalise == "none"
    assert loaded.is_plain


def test_cards_record_the_lung_finder_and_old_ones_keep_the_heuristic() -> None:
    """A card trained with a lung crop before the segmenter existed names no finder: it must keep
    the classical one it was trained with; a new card names the finder it used."""
    old = {"input_size": 224, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    assert PreprocessSpec.from_dict({**old, "lung_crop": True}).lung_finder == "heuristic"
    assert PreprocessSpec.from_dict({**old, "lung_mask": True}).lung_finder == "heuristic"
    assert PreprocessSpec.from_dict(old).lung_finder == "learned"  # plain: no lungs used
    new = PreprocessSpec(lung_crop=True)
    assert new.lung_finder == "learned"
    recorded = ModelCard.preprocessing_of(new)
    assert recorded == {"lung_crop": True, "lung_finder": "learned"}
    assert PreprocessSpec.from_dict({**old, **recorded}) == new
    assert ModelCard.preprocessing_of(PreprocessSpec()) == {}
    assert ModelCard.preprocessing_of(PreprocessSpec(lung_finder="heuristic")) == {}
    legacy = PreprocessSpec(lung_mask=True, lung_finder="heuristic")
    assert PreprocessSpec.from_dict({**old, **ModelCard.preprocessing_of(legacy)}) == legacy
    with pytest.raises(ValueError, match="lung_finder"):
        PreprocessSpec(lung_finder="oracle")


def test_shipped_model_card_gives_identical_inputs(cxr: tuple[Path, np.ndarray]) -> None:
    registry = Path(__file__).resolve().parents[3] / "models" / "registry"
    cards = sorted(registry.glob("*/model_card.json"))
    assert cards, "no shipped model card"
    image = load_image_file(cxr[0])
    for path in cards:
        card = ModelCard.load(path)
        if not card.preprocessing:  # the paper's steps: resize and normalise, nothing else
            from_dict = PreprocessSpec.from_dict(card.to_dict())  # the whole card's dict
            assert from_dict == card.preprocess and from_dict.is_plain
            x = to_model_input(image, card.preprocess)
            assert torch.equal(x, normalise(resize_image(image, card.input_size), card.preprocess))
            continue
        # Optional steps (the EfficientNet's lung crop and CLAHE): serving's spec is the one
        # the trainer recorded, and serving's input is the trainer's cached gray, normalised.
        trained = PreprocessSpec.from_dict(
            {
                **card.training_parameters["preprocess"],
                "input_size": card.training_parameters["input_size"],
                "mean": card.mean,
                "std": card.std,
            }
        )
        assert trained == card.preprocess and not trained.is_plain
        if "lung_finder" not in card.preprocessing:  # trained before the learned segmenter
            assert trained.lung_finder == "heuristic"
        x = to_model_input(image, card.preprocess)
        assert torch.equal(x, normalise(prepare_gray(image, trained), trained))


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="equalise"):
        PreprocessSpec(equalise="adaptive")
    with pytest.raises(ValueError, match="crop_margin"):
        PreprocessSpec(crop_margin=0.9)
    with pytest.raises(ValueError, match="mask_margin"):
        PreprocessSpec(mask_margin=-0.1)


def test_equalisers() -> None:
    rng = np.random.default_rng(0)
    image = (rng.random((120, 90)) * 0.3 + 0.2).astype(np.float32)  # low contrast
    for out in (equalise_hist(image), clahe(image)):
        assert out.shape == image.shape and out.dtype == np.float32
        assert out.min() >= 0.0 and out.max() <= 1.0
        assert out.std() > 2 * image.std()  # contrast stretched
    hist = equalise_hist(image)
    order = np.argsort(image.ravel(), kind="stable")
    assert np.all(np.diff(hist.ravel()[order]) >= -1e-6)  # monotone in the input
    assert hist.min() < 0.01 and hist.max() > 0.99  # full range
    flat = np.full((16, 16), 0.3, np.float32)
    assert np.allclose(equalise_hist(flat), flat)
    assert np.isfinite(clahe(flat)).all()
    tiny = np.array([[0.0, 1.0]], np.float32)
    assert clahe(tiny).shape == (1, 2)


def test_dataset_caches_what_serving_computes(cxr: tuple[Path, np.ndarray]) -> None:
    from training.dataset import load_split
    from training.manifest import ManifestRow

    path, _ = cxr
    row = ManifestRow(path=path, relpath=path.name, label=1, split="test")
    spec = PreprocessSpec(input_size=64, lung_crop=True, lung_mask=True, equalise="clahe")
    data = load_split([row], spec, workers=1)
    image = load_image_file(path)
    assert torch.equal(normalise(data.gray, spec)[0], to_model_input(image, spec))
    plain = load_split([row], 64, workers=1)
    assert torch.equal(plain.gray[0], resize_image(image, 64))
