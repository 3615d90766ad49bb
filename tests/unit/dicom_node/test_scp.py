"""The listener AE is configured from the settings (no network here)."""

from __future__ import annotations

import os
from pathlib import Path

from pynetdicom import sop_class

from common.settings import Settings
from dicom_node.contexts import supported_contexts
from dicom_node.intake import IntakeResult, Status
from dicom_node.scp import _status_dataset, build_ae
from tests.unit.dicom_node.conftest import FakeStore


def test_build_ae_applies_the_settings(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        ae_title="NODE1",
        allowed_calling_aes=["ORTHANC", "MODALITY"],
        max_associations=3,
        max_pdu=65536,
        network_timeout_s=12.5,
        min_free_space_mb=7,
    )
    stale = settings.storage.spool / ".1.2.3.abc.tmp"
    settings.storage.spool.mkdir(parents=True)
    stale.write_bytes(b"left by a crash")
    ae = build_ae(settings, store=FakeStore(), enqueue=lambda _job: None)
    try:
        assert ae.ae_title == "NODE1"
        assert ae.require_called_aet is True
        assert ae.require_calling_aet == ["ORTHANC", "MODALITY"]
        assert ae.maximum_associations == 3
        assert ae.maximum_pdu_size == 65536
        assert ae.network_timeout == ae.acse_timeout == ae.dimse_timeout == 12.5
        assert ae.intake.spool.min_free_bytes == 7 * 2**20
        supported = {cx.abstract_syntax: cx.transfer_syntax for cx in ae.supported_contexts}
        assert len(supported) == len(supported_contexts())
        assert sop_class.ComputedRadiographyImageStorage in supported
        assert sop_class.Verification in supported
        assert not stale.exists()  # crash leftovers removed at start
        assert oct(os.stat(settings.storage.spool).st_mode & 0o777) == oct(0o700)
    finally:
        ae.enqueuer.close()


def test_failure_responses_carry_a_comment_and_the_offending_element() -> None:
    ok = _status_dataset(IntakeResult(Status.SUCCESS, job_id=1))
    assert ok.Status == 0 and "ErrorComment" not in ok
    bad = _status_dataset(
        IntakeResult(
            Status.DATASET_DOES_NOT_MATCH,
            "SOPInstanceUID missing" + "!" * 80,
            offending_elements=(0x00080018,),
        )
    )
    assert bad.Status == 0xA900
    assert bad.ErrorComment.startswith("SOPInstanceUID missing") and len(bad.ErrorComment) <= 64
    assert bad.OffendingElement == 0x00080018
