"""Storage SOP classes: which ones the node analyses, and which it accepts only to reject.

The listener negotiates from these lists (:mod:`dicom_node.contexts`) and the worker's gate checks
against them (:mod:`worker.gate`), so the two can never disagree.
"""

from __future__ import annotations

from pydicom import uid as sop_class

SECONDARY_CAPTURE_STORAGE: str = sop_class.SecondaryCaptureImageStorage
"""A Secondary Capture is analysed when its Modality says CR or DX (e.g. NIH ChestX-ray)."""

ANALYSED_SOP_CLASSES: tuple[str, ...] = (
    sop_class.ComputedRadiographyImageStorage,
    sop_class.DigitalXRayImageStorageForPresentation,
    sop_class.DigitalXRayImageStorageForProcessing,
    SECONDARY_CAPTURE_STORAGE,
)
"""Storage classes the model may analyse (subject to the worker's gate)."""

OTHER_IMAGE_SOP_CLASSES: tuple[str, ...] = (
    sop_class.CTImageStorage,
    sop_class.MRImageStorage,
    sop_class.DigitalMammographyXRayImageStorageForPresentation,
    sop_class.DigitalMammographyXRayImageStorageForProcessing,
    sop_class.DigitalIntraOralXRayImageStorageForPresentation,
    sop_class.DigitalIntraOralXRayImageStorageForProcessing,
    sop_class.XRayAngiographicImageStorage,
    sop_class.XRayRadiofluoroscopicImageStorage,
    sop_class.UltrasoundImageStorage,
    sop_class.UltrasoundMultiFrameImageStorage,
    sop_class.MultiFrameSingleBitSecondaryCaptureImageStorage,
    sop_class.MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
    sop_class.MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    sop_class.MultiFrameTrueColorSecondaryCaptureImageStorage,
    sop_class.VLPhotographicImageStorage,
)
"""Image storage classes accepted so that the gate can reject them with a reason."""

ACCEPTED_SOP_CLASSES: frozenset[str] = frozenset(ANALYSED_SOP_CLASSES + OTHER_IMAGE_SOP_CLASSES)
"""Storage classes whose instances are spooled and become jobs."""
