"""Result objects made readable in a page: the overlay as PNG, the SR's content as a table.

Both read the files the worker wrote to the results folder (never the spooled source). The
result objects copy the source's patient module, so nothing here shows a patient attribute:
the SR table hides person-name values and any value that contains the object's Patient
Name, Patient ID or Birth Date; the overlay is the Secondary Capture's pixels, whose burned-in
caption is the research-use warning only.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset

HIDDEN = "(hidden: patient data)"
MAX_SIDE = 1024
"""Longest side of the overlay PNG, in pixels (enough for a page, small to send)."""


class NotAResult(ValueError):
    """The path is not a readable result object inside the results folder."""


def inside(results_dir: Path, path: str | Path) -> Path:
    """``path`` resolved, if it lies in ``results_dir``; raises :class:`NotAResult` otherwise."""
    resolved = Path(path).resolve()
    if not resolved.is_relative_to(results_dir.resolve()) or not resolved.is_file():
        raise NotAResult(f"{path} is not a file in the results folder")
    return resolved


def overlay_png(results_dir: Path, path: str | Path) -> bytes:
    """The Secondary Capture at ``path`` as a PNG, at most :data:`MAX_SIDE` pixels a side."""
    resolved = inside(results_dir, path)
    stat = resolved.stat()
    return _png(str(resolved), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=32)
def _png(path: str, mtime_ns: int, size: int) -> bytes:
    del mtime_ns, size  # cache keys: a rewritten file is rendered again
    ds = dcmread(path)
    image = to_image(ds)
    image.thumbnail((MAX_SIDE, MAX_SIDE))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def to_image(ds: Dataset) -> Image.Image:
    """An 8-bit RGB or grayscale picture of the dataset's first frame."""
    pixels = np.asarray(ds.pixel_array)
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        pixels = pixels[0]
    if pixels.ndim == 3 and pixels.shape[-1] == 3:
        return Image.fromarray(_to_uint8(pixels), mode="RGB")
    gray = _to_uint8(pixels)
    if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        gray = 255 - gray
    return Image.fromarray(gray, mode="L")


def _to_uint8(pixels: np.ndarray) -> np.ndarray:
    if pixels.dtype == np.uint8:
        return pixels
    values = pixels.astype(np.float64)
    low, high = float(values.min()), float(values.max())
    scaled = (values - low) / (high - low) * 255.0 if high > low else np.zeros_like(values)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


@dataclasses.dataclass(frozen=True)
class SrRow:
    """One content item of an SR: its depth in the tree, concept name and value."""

    depth: int
    relationship: str
    concept: str
    value: str
    value_type: str


@dataclasses.dataclass(frozen=True)
class SrTable:
    """An SR's title, flags and content items, ready for a table."""

    title: str
    completion: str
    verification: str
    rows: list[SrRow]


def sr_table(results_dir: Path, path: str | Path) -> SrTable:
    """The SR at ``path`` as a table, patient data hidden."""
    ds = dcmread(inside(results_dir, path))
    return sr_table_of(ds)


def sr_table_of(ds: Dataset) -> SrTable:
    """The SR dataset as a table, patient data hidden (see :func:`patient_strings`)."""
    secrets = patient_strings(ds)
    # Concept names are code meanings (coding schemes, not patients); values are checked.
    rows = [
        dataclasses.replace(row, value=_clean(row.value, secrets))
        for row in _walk(ds.get("ContentSequence", []), 0)
    ]
    return SrTable(
        title=_meaning(ds.get("ConceptNameCodeSequence")),
        completion=str(ds.get("CompletionFlag", "")),
        verification=str(ds.get("VerificationFlag", "")),
        rows=rows,
    )


def patient_strings(ds: Dataset) -> set[str]:
    """The object's identifying values (name components, IDs, birth date), upper case."""
    found: set[str] = set()
    name = ds.get("PatientName")
    if name:
        for part in str(name).replace("=", "^").split("^"):
            if len(part.strip()) >= 2:
                found.add(part.strip().upper())
        found.add(str(name).strip().upper())
    for keyword in ("PatientID", "IssuerOfPatientID", "PatientBirthDate", "OtherPatientIDs"):
        value = ds.get(keyword)
        values = value if isinstance(value, list | tuple) else [value]
        for v in values:
            if v and len(str(v).strip()) >= 2:
                found.add(str(v).strip().upper())
    for item in ds.get("OtherPatientIDsSequence", []):
        if item.get("PatientID"):
            found.add(str(item.PatientID).strip().upper())
    return found


def _clean(text: str, secrets: set[str]) -> str:
    """``text``, or :data:`HIDDEN` when one of ``secrets`` occurs in it as a whole word."""
    upper = text.upper()
    for secret in secrets:
        if re.search(rf"(?<![A-Z0-9]){re.escape(secret)}(?![A-Z0-9])", upper):
            return HIDDEN
    return text


def _walk(items: list[Dataset], depth: int) -> Iterator[SrRow]:
    for item in items:
        kind = str(item.get("ValueType", ""))
        yield SrRow(
            depth=depth,
            relationship=str(item.get("RelationshipType", "")),
            concept=_meaning(item.get("ConceptNameCodeSequence")),
            value=_value(item, kind),
            value_type=kind,
        )
        yield from _walk(item.get("ContentSequence", []), depth + 1)


def _meaning(seq: object) -> str:
    if not seq:
        return ""
    code = seq[0]  # type: ignore[index]
    return str(code.get("CodeMeaning", code.get("CodeValue", "")))


def _value(item: Dataset, kind: str) -> str:
    if kind == "PNAME":
        return HIDDEN
    if kind == "TEXT":
        return str(item.get("TextValue", ""))
    if kind == "CODE":
        return _meaning(item.get("ConceptCodeSequence"))
    if kind == "NUM":
        measured = item.get("MeasuredValueSequence")
        if not measured:
            return "(no value)"
        value = measured[0]
        units = value.get("MeasurementUnitsCodeSequence")
        unit = ""
        if units:
            unit_code = units[0]
            unit = str(unit_code.get("CodeValue", ""))
            unit = "" if unit in {"1", "{probability}"} else f" {unit}"
        return f"{value.get('NumericValue', '')}{unit}"
    if kind == "UIDREF":
        return str(item.get("UID", ""))
    if kind in {"DATE", "TIME", "DATETIME"}:
        return str(item.get(kind.title().replace("Datetime", "DateTime"), ""))
    if kind in {"IMAGE", "COMPOSITE", "WAVEFORM"}:
        refs = item.get("ReferencedSOPSequence")
        return f"refers to {refs[0].ReferencedSOPInstanceUID}" if refs else ""
    if kind in {"SCOORD", "SCOORD3D"}:
        points = item.get("GraphicData", [])
        return f"{item.get('GraphicType', '')} ({len(points) // 2} points)"
    if kind == "CONTAINER":
        return ""
    return f"({kind})"
