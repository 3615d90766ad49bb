"""The SR's Image Library (TID 1600) entry for a projection radiograph.

highdicom's :class:`~highdicom.sr.ImageLibrary` (0.28.2) reads Imager Pixel Spacing and
Patient Orientation unconditionally for CR/DX, so a CR without Imager Pixel Spacing (the NEMA
chest CR) raises AttributeError, and dropping the library would lose the image's
description. TID 1603 makes those rows conditional on the image having them, so this module
gives highdicom's descriptor template exactly what the image has: orientation when present,
spacing from Imager Pixel Spacing or (a positive) Pixel Spacing, nothing invented.

highdicom also codes the entry's Modality from the SOP Class (a Secondary Capture becomes OT),
while TID 1602 row 1 is the image's Modality (0008,0060): the NIH radiograph is a Secondary
Capture whose Modality is DX. :func:`acquisition_modality` codes the attribute (CID 29).
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
from highdicom.sr import (
    ContainerContentItem,
    ContentItem,
    ContentSequence,
    ImageContentItem,
    NumContentItem,
    RelationshipTypeValues,
    TextContentItem,
)
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from worker.results import codes as our_codes


def _spacing(image: Dataset) -> tuple[float, float] | None:
    for keyword in ("ImagerPixelSpacing", "PixelSpacing"):
        value = image.get(keyword)
        if value is not None and len(value) == 2 and min(float(v) for v in value) > 0.0:
            return float(value[0]), float(value[1])
    return None


def acquisition_modality(image: Dataset) -> Code | None:
    """The image's Modality attribute as a CID 29 code, or None when it has none listed."""
    modality = str(image.get("Modality") or "")
    return next((code for code in codes.cid29.concepts.values() if code.value == modality), None)


class ProjectionImageDescriptors(hd.sr.ImageLibraryEntryDescriptors):
    """TID 1602 descriptors, with TID 1603 rows only for what a radiograph actually states."""

    def __init__(self, image: Dataset) -> None:
        super().__init__(image)
        modality = acquisition_modality(image)
        if modality is not None:  # row 1 from the attribute, not from the SOP Class
            self[0].ConceptCodeSequence = [hd.sr.CodedConcept.from_code(modality)]

    def _generate_projection_radiography_descriptors(
        self, dataset: Dataset
    ) -> Sequence[ContentItem]:
        acquisition = RelationshipTypeValues.HAS_ACQ_CONTEXT
        items: list[ContentItem] = []
        orientation = dataset.get("PatientOrientation")
        if orientation is not None and len(orientation) == 2 and all(orientation):
            items.append(
                TextContentItem(
                    name=codes.DCM.PatientOrientationRow,
                    value=str(orientation[0]),
                    relationship_type=acquisition,
                )
            )
            items.append(
                TextContentItem(
                    name=codes.DCM.PatientOrientationColumn,
                    value=str(orientation[1]),
                    relationship_type=acquisition,
                )
            )
        spacing = _spacing(dataset)
        if spacing is not None:
            items.append(
                NumContentItem(
                    name=codes.DCM.HorizontalPixelSpacing,
                    value=spacing[1],
                    unit=codes.UCUM.Millimeter,
                    relationship_type=acquisition,
                )
            )
            items.append(
                NumContentItem(
                    name=codes.DCM.VerticalPixelSpacing,
                    value=spacing[0],
                    unit=codes.UCUM.Millimeter,
                    relationship_type=acquisition,
                )
            )
        return items


def image_library(image: Dataset) -> ContainerContentItem:
    """TID 1600 Image Library with one group holding ``image`` and its descriptors."""
    entry = ImageContentItem(
        name=our_codes.SOURCE,
        referenced_sop_class_uid=image.SOPClassUID,
        referenced_sop_instance_uid=image.SOPInstanceUID,
        relationship_type=RelationshipTypeValues.CONTAINS,
    )
    entry.ContentSequence = ContentSequence(ProjectionImageDescriptors(image))
    group = ContainerContentItem(
        name=codes.DCM.ImageLibraryGroup, relationship_type=RelationshipTypeValues.CONTAINS
    )
    group.ContentSequence = ContentSequence([entry])
    library = ContainerContentItem(
        name=codes.DCM.ImageLibrary, relationship_type=RelationshipTypeValues.CONTAINS
    )
    library.ContentSequence = ContentSequence([group])
    return library


def insert_image_library(report: hd.sr.MeasurementReport, image: Dataset) -> None:
    """Put the library into a TID 1500 report, before Imaging Measurements (row order)."""
    content = report[0].ContentSequence
    position = next(
        (
            i
            for i, item in enumerate(content)
            if item.ConceptNameCodeSequence[0].CodeValue == codes.DCM.ImagingMeasurements.value
        ),
        len(content),
    )
    content.insert(position, image_library(image))
