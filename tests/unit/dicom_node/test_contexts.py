"""The negotiated SOP classes and transfer syntaxes."""

from __future__ import annotations

from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import sop_class

from dicom_node.contexts import (
    ACCEPTED_SOP_CLASSES,
    ANALYSED_SOP_CLASSES,
    IMAGE_TRANSFER_SYNTAXES,
    REFUSED_SOP_CLASSES,
    UNCOMPRESSED_TRANSFER_SYNTAXES,
    is_accepted_sop_class,
    supported_contexts,
)


def test_the_issue_s_classes_are_analysed() -> None:
    assert set(ANALYSED_SOP_CLASSES) == {
        "1.2.840.10008.5.1.4.1.1.1",  # CR
        "1.2.840.10008.5.1.4.1.1.1.1",  # DX for presentation
        "1.2.840.10008.5.1.4.1.1.1.1.1",  # DX for processing
        "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture
    }


def test_the_issue_s_transfer_syntaxes_are_accepted_for_images() -> None:
    required = {
        ImplicitVRLittleEndian,
        ExplicitVRLittleEndian,
        DeflatedExplicitVRLittleEndian,
        JPEGBaseline8Bit,
        JPEGLossless,
        JPEGLosslessSV1,
        JPEGLSLossless,
        JPEGLSNearLossless,
        JPEG2000Lossless,
        JPEG2000,
        RLELossless,
    }
    assert required <= set(IMAGE_TRANSFER_SYNTAXES)
    contexts = dict(supported_contexts())
    for uid in ANALYSED_SOP_CLASSES:
        assert set(contexts[uid]) == set(IMAGE_TRANSFER_SYNTAXES)


def test_sr_is_negotiated_but_not_accepted() -> None:
    for uid in (
        sop_class.ComprehensiveSRStorage,
        sop_class.Comprehensive3DSRStorage,
        sop_class.BasicTextSRStorage,
    ):
        assert uid in REFUSED_SOP_CLASSES
        assert not is_accepted_sop_class(uid)
        assert set(dict(supported_contexts())[uid]) == set(UNCOMPRESSED_TRANSFER_SYNTAXES)


def test_ct_is_accepted_for_the_gate_to_reject() -> None:
    assert is_accepted_sop_class(sop_class.CTImageStorage)
    assert not is_accepted_sop_class("1.2.3.4")  # unknown classes are not taken


def test_each_abstract_syntax_appears_once_and_echo_is_first() -> None:
    abstract = [uid for uid, _ in supported_contexts()]
    assert abstract[0] == sop_class.Verification
    assert len(abstract) == len(set(abstract))
    assert ACCEPTED_SOP_CLASSES.isdisjoint(REFUSED_SOP_CLASSES)
