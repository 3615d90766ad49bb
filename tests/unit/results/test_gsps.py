"""The Grayscale Softcopy Presentation State: contours and verdict over the source."""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset

from tests.unit.results.builders import build
from worker.results import AlgorithmInfo
from worker.results.build import source_label


def test_gsps_references_source_and_draws_regions_and_verdict(
    source: Dataset, algorithm: AlgorithmInfo, heatmap, display_image
) -> None:
    results = build(source, algorithm, heatmap, display_image)
    pr = results.gsps
    assert pr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.11.1"
    (series,) = pr.ReferencedSeriesSequence
    assert series.ReferencedImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    layers = {a.GraphicLayer: a for a in pr.GraphicAnnotationSequence}
    assert set(layers) == {"EVIDENCE", "VERDICT"}
    (graphic,) = layers["EVIDENCE"].GraphicObjectSequence
    assert graphic.GraphicType == "POLYLINE" and graphic.GraphicAnnotationUnits == "PIXEL"
    points = np.array(graphic.GraphicData, dtype=float).reshape(-1, 2)
    assert np.allclose(points[0], points[-1])
    texts = [t.UnformattedTextValue for t in layers["VERDICT"].TextObjectSequence]
    assert texts[0] == "COVID-19 pattern: PRESENT"
    assert "0.800" in texts[1] and "0.420" in texts[1]
    assert "2026.11.1" in texts[2]
    assert texts[3] == "RESEARCH USE ONLY - NOT FOR DIAGNOSTIC USE"
    # MONOCHROME1 source: shown the right way round
    assert pr.PresentationLUTShape == "INVERSE"
    # the overlay bitmap for viewers that render only overlays
    assert pr.overlay_array(0x6000).any()
    assert pr[0x60001001].value == "EVIDENCE"


def test_sending_order_sc_pm_gsps_sr(source, algorithm, heatmap, display_image) -> None:
    results = build(source, algorithm, heatmap, display_image)
    assert [kind for kind, _ in results.items()] == ["sc", "pm", "pr", "sr"]
    assert [ds.Modality for ds in results] == ["OT", "OT", "PR", "SR"]


def test_series_descriptions_name_the_source(source, algorithm, heatmap, display_image) -> None:
    source.ViewPosition = "AP"
    source.SeriesNumber = 3
    source.InstanceNumber = 2
    assert source_label(source) == "AP s3 i2"
    results = build(source, algorithm, heatmap, display_image)
    for ds in results:
        assert "(AP s3 i2): " in ds.SeriesDescription
        assert "research use only" in ds.SeriesDescription
        assert len(ds.SeriesDescription) <= 64
