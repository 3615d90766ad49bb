"""Key attributes of a spooled instance, recorded on its job for the timeline and the gate."""

from __future__ import annotations

from typing import Any

from pydicom.dataset import Dataset


def key_attributes(ds: Dataset) -> dict[str, Any]:
    """Modality, view, body part, size, photometric interpretation and transfer syntax.

    Only technical attributes: nothing here identifies a patient.
    """

    def text(keyword: str, limit: int) -> str | None:
        value = ds.get(keyword)
        if value in (None, ""):
            return None
        return str(value).strip()[:limit] or None

    def integer(keyword: str) -> int | None:
        value = ds.get(keyword)
        try:
            return int(value) if value not in (None, "") else None
        except (TypeError, ValueError):
            return None

    meta = getattr(ds, "file_meta", None)
    ts = str(meta.TransferSyntaxUID) if meta is not None and "TransferSyntaxUID" in meta else None
    return {
        "modality": text("Modality", 16),
        "view_position": text("ViewPosition", 16),
        "body_part": text("BodyPartExamined", 64),
        "rows": integer("Rows"),
        "columns": integer("Columns"),
        "photometric_interpretation": text("PhotometricInterpretation", 16),
        "transfer_syntax_uid": ts,
    }
