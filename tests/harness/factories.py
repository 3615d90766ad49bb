"""Build small, valid DICOM datasets for tests, wrapping real pixel arrays.

Used to put the chest X-rays of ``shared/data/cxr`` (JPEG) into CR/DX DICOM with unchanged
pixels, and to make the 8-/16-bit, MONOCHROME1/2 and rescaled variants the preprocessing tests need.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    ExplicitVRLittleEndian,
    generate_uid,
)

CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
DX_PRESENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
SHARED = Path(__file__).resolve().parents[3] / "shared"
CXR_DIR = SHARED / "data" / "cxr"
DICOM_DIR = SHARED / "data" / "dicom"


def wrap_pixels(
    pixels: np.ndarray,
    *,
    modality: str = "CR",
    sop_class_uid: str = CR_IMAGE_STORAGE,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    signed: bool = False,
    rescale: tuple[float, float] | None = None,
    window: tuple[float, float] | None = None,
    view_position: str | None = "PA",
    body_part: str | None = "CHEST",
    imager_pixel_spacing: tuple[float, float] | None = (0.2, 0.2),
    patient_name: str = "Test^Patient",
    patient_id: str = "TEST0001",
    study_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
) -> Dataset:
    """A CR/DX-like dataset holding ``pixels`` (2-D uint8/uint16/int16) unchanged.

    ``rescale`` is (slope, intercept) for the Modality LUT; ``window`` is (center, width).
    ``imager_pixel_spacing`` (mm at the detector; None: not stated) is what real CR and DX films
    state, and what decides whether a Parametric Map is sent (setting ``parametric_map``).
    """
    if pixels.ndim != 2:
        raise ValueError("pixels must be 2-D")
    bits_allocated = 8 if pixels.dtype.itemsize == 1 else 16
    now = dt.datetime.now()
    ds = Dataset()
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = sop_instance_uid or generate_uid()
    ds.StudyInstanceUID = study_instance_uid or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyDate = now.strftime("%Y%m%d")
    ds.StudyTime = now.strftime("%H%M%S")
    ds.AccessionNumber = "ACC0001"
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.Modality = modality
    ds.Manufacturer = "deepcovid-node tests"
    if body_part is not None:
        ds.BodyPartExamined = body_part
    if view_position is not None:
        ds.ViewPosition = view_position
    ds.PatientOrientation = ["P", "F"] if view_position in {"PA", None} else ["A", "F"]
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = (int(v) for v in pixels.shape)
    if imager_pixel_spacing is not None:
        ds.ImagerPixelSpacing = list(imager_pixel_spacing)
    ds.BitsAllocated = bits_allocated
    ds.BitsStored = bits_stored or bits_allocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if signed else 0
    if rescale is not None:
        ds.RescaleSlope = f"{rescale[0]:g}"
        ds.RescaleIntercept = f"{rescale[1]:g}"
        ds.RescaleType = "US"
    if window is not None:
        ds.WindowCenter = f"{window[0]:g}"
        ds.WindowWidth = f"{window[1]:g}"
    if sop_class_uid == DX_PRESENTATION_STORAGE:
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.ImageType = ["ORIGINAL", "PRIMARY", ""]
        ds.DetectorType = "DIRECT"
        ds.PixelIntensityRelationship = "LIN"
        ds.PixelIntensityRelationshipSign = 1
        ds.RescaleSlope = ds.get("RescaleSlope", "1")
        ds.RescaleIntercept = ds.get("RescaleIntercept", "0")
        ds.RescaleType = "US"
        ds.PresentationLUTShape = "INVERSE" if photometric == "MONOCHROME1" else "IDENTITY"
        ds.Laterality = ""
        ds.ContentDate = ds.StudyDate
        ds.ContentTime = ds.StudyTime
        ds.BurnedInAnnotation = "NO"
        ds.LossyImageCompression = "00"
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    ds.preamble = b"\0" * 128
    return ds


def load_cxr(relpath: str) -> np.ndarray:
    """A manifest image of ``shared/data/cxr`` as a 2-D uint8 array."""
    from PIL import Image

    with Image.open(CXR_DIR / relpath) as img:
        return np.asarray(img.convert("L"), dtype=np.uint8)


def random_registry(root: Path, arch: str = "squeezenet1_1", *, seed: int = 0) -> Path:
    """A model registry at ``root`` whose active version is a randomly initialised ``arch``.

    Pipeline tests and speed benchmarks need *a* model, not a good one (speed does not depend
    on the weights); the shipped model is tested on its own.
    """
    import torch

    from models.architectures import build_model
    from models.card import ModelCard
    from models.registry import Registry

    torch.manual_seed(seed)
    registry = Registry(root)
    card = ModelCard(architecture=arch, threshold=0.5, notes="random weights (tests, benchmarks)")
    registry.activate(registry.save_version(build_model(arch, init="none"), card))
    return root


def record_job(store: Any, uid: str, *, sha256: str = "0" * 64, calling_ae: str = "TEST") -> int:
    """Record the receipt of a CR instance ``uid`` in a job store; returns the job id.

    The spool path is fictitious: for tests of the store's rules, which never read the file.
    """
    outcome = store.record_received(
        sop_instance_uid=uid,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.1",
        study_instance_uid="1.2.3",
        series_instance_uid="1.2.3.4",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        calling_ae=calling_ae,
        spool_path=f"/spool/{uid}.dcm",
        sha256=sha256,
        size_bytes=10,
    )
    return int(outcome.job_id)


def spool_dataset(
    store: Any, ds: Dataset, path: Path, *, sha256: str = "0" * 64, calling_ae: str = "TEST"
) -> int:
    """Save ``ds`` at ``path`` and record its receipt with its own UIDs, as the listener would;
    returns the job id. For tests that run the worker's pipeline on a real file."""
    ds.save_as(path, enforce_file_format=True)
    outcome = store.record_received(
        sop_instance_uid=str(ds.SOPInstanceUID),
        sop_class_uid=str(ds.SOPClassUID),
        study_instance_uid=str(ds.StudyInstanceUID),
        series_instance_uid=str(ds.SeriesInstanceUID),
        transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
        calling_ae=calling_ae,
        spool_path=str(path),
        sha256=sha256,
        size_bytes=path.stat().st_size,
    )
    return int(outcome.job_id)


def random_ensemble_registry(
    root: Path,
    arch: str = "squeezenet1_1",
    *,
    members: int = 3,
    input_size: int = 64,
    head_gain: float = 40.0,
    name: str = "ens",
) -> Path:
    """A registry at ``root`` with versions ``m1`` ... ``mK`` (random ``arch``, seeds 0..K-1)
    and the active ensemble ``name`` of them, built by :func:`training.ensemble.build_ensemble`.

    The members' heads are scaled by ``head_gain`` so that their probabilities spread over (0, 1)
    and differ from each other (a mean that equals one member's would prove nothing);
    ``input_size`` 64 keeps occlusion maps cheap.
    """
    import torch

    from models.architectures import build_model, head_parameters
    from models.card import ModelCard
    from models.registry import Registry
    from training.ensemble import build_ensemble

    registry = Registry(root)
    for k in range(members):
        torch.manual_seed(k)
        model = build_model(arch, init="none")
        with torch.no_grad():
            for param in head_parameters(model, arch):
                param.mul_(head_gain)
        card = ModelCard(
            architecture=arch,
            version=f"m{k + 1}",
            input_size=input_size,
            threshold=0.5,
            training_parameters={"seed": k},
            notes="random weights (tests)",
        )
        registry.save_version(model, card)
    version = build_ensemble(registry, name, [f"m{k + 1}" for k in range(members)])
    registry.activate(version)
    return root
