"""Fakes for the dicom_node unit tests: a job store that records calls, crafted datasets."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from tests.harness.factories import wrap_pixels


@dataclass(frozen=True)
class FakeOutcome:
    """Same fields as ``store.ReceiptOutcome``."""

    job_id: int
    created: bool
    changed: bool
    needs_analysis: bool


class FakeStore:
    """Records ``record_received`` calls; raises ``fail_with`` when set (a database failure)."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}
        self.fail_with: Exception | None = None
        self._lock = threading.Lock()

    def record_received(self, **fields: Any) -> FakeOutcome:
        with self._lock:
            if self.fail_with is not None:
                raise self.fail_with
            uid = fields["sop_instance_uid"]
            previous = self.rows.get(uid)
            self.rows[uid] = fields
            job_id = list(self.rows).index(uid) + 1
            changed = previous is None or previous["sha256"] != fields["sha256"]
            return FakeOutcome(job_id, previous is None, changed, changed)


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


def small_cr(**overrides: Any) -> Dataset:
    """A small CR dataset (16x16 pixels) with fresh UIDs; ``overrides`` set attributes."""
    ds = wrap_pixels(
        np.arange(256, dtype=np.uint16).reshape(16, 16),
        patient_name="Doe^Jane",
        patient_id="PID-SECRET-77",
    )
    for keyword, value in overrides.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return ds


def encode(ds: Dataset, syntax: str = ExplicitVRLittleEndian) -> bytes:
    """The dataset encoded as on the wire (no file meta) in ``syntax``."""
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = syntax == ImplicitVRLittleEndian
    write_dataset(buffer, ds)
    return buffer.getvalue()
