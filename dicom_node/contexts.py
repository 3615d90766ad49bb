"""What the listener negotiates: the storage SOP classes and transfer syntaxes it takes.

Three tiers of storage SOP classes (the first two are defined in :mod:`common.sop`, which the
worker's gate shares):

``ANALYSED_SOP_CLASSES``
    What the node is for: CR, DX (for presentation and for processing) and Secondary Capture
    image storage. The worker's gate decides whether each instance is a frontal chest X-ray.
``OTHER_IMAGE_SOP_CLASSES``
    Other image storage classes (CT, MR, mammography, intra-oral, XA, RF, US, multi-frame SC,
    VL photographic). They are *accepted and spooled* so that the gate, not the listener, turns
    them away with a reason a PACS administrator can read in the job timeline ("modality CT: only
    CR/DX chest radiographs are analysed") -- a mis-set auto-routing rule then shows up in
    ``deepcovid jobs list`` instead of as anonymous association failures on the PACS side.
``REFUSED_SOP_CLASSES``
    Every other storage class pynetdicom knows (SR, RT, waveforms, encapsulated documents, ...).
    Their presentation contexts are accepted with the uncompressed transfer syntaxes only, so that
    the C-STORE handler can answer them with a DIMSE status -- 0x0122 *SOP class not supported*
    with an Error Comment -- instead of a bare presentation-context rejection that most PACS log
    without a reason. Nothing of them is stored.

Image classes take ``IMAGE_TRANSFER_SYNTAXES``: the uncompressed and deflated ones, JPEG baseline
and extended (12-bit CR is often sent as extended), JPEG lossless (process 14 and its SV1 form),
JPEG-LS (lossless and near-lossless), JPEG 2000 (lossless and lossy) and RLE -- all of which the
worker can decode with the pylibjpeg plugins. Anything else (e.g. HTJ2K, MPEG) is rejected at
negotiation, the standard answer for a transfer syntax an SCP cannot handle.
"""

from __future__ import annotations

from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom.presentation import AllStoragePresentationContexts

from common.sop import ACCEPTED_SOP_CLASSES, ANALYSED_SOP_CLASSES, OTHER_IMAGE_SOP_CLASSES

VERIFICATION = "1.2.840.10008.1.1"
"""The Verification SOP Class (C-ECHO), PS3.4 Annex A."""

UNCOMPRESSED_TRANSFER_SYNTAXES: tuple[str, ...] = (
    ImplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
)
"""Transfer syntaxes every accepted context offers (the first is the DICOM default)."""

IMAGE_TRANSFER_SYNTAXES: tuple[str, ...] = (
    *UNCOMPRESSED_TRANSFER_SYNTAXES,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    RLELossless,
)
"""Transfer syntaxes accepted for image storage classes."""

REFUSED_SOP_CLASSES: tuple[str, ...] = tuple(
    str(cx.abstract_syntax)
    for cx in AllStoragePresentationContexts
    if cx.abstract_syntax not in ACCEPTED_SOP_CLASSES
)
"""Storage classes negotiated only to be answered 0x0122 by the C-STORE handler."""


def is_accepted_sop_class(uid: str) -> bool:
    """Whether instances of storage class ``uid`` are spooled and become jobs."""
    return uid in ACCEPTED_SOP_CLASSES


def supported_contexts() -> list[tuple[str, tuple[str, ...]]]:
    """(abstract syntax, transfer syntaxes) pairs the listener adds as supported contexts.

    Verification (C-ECHO) first, then the accepted image classes, then the refused classes.
    """
    pairs: list[tuple[str, tuple[str, ...]]] = [
        (VERIFICATION, (ImplicitVRLittleEndian, ExplicitVRLittleEndian))
    ]
    pairs += [(uid, IMAGE_TRANSFER_SYNTAXES) for uid in ANALYSED_SOP_CLASSES]
    pairs += [(uid, IMAGE_TRANSFER_SYNTAXES) for uid in OTHER_IMAGE_SOP_CLASSES]
    pairs += [(uid, UNCOMPRESSED_TRANSFER_SYNTAXES) for uid in REFUSED_SOP_CLASSES]
    return pairs
