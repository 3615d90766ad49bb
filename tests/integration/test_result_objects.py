"""Result objects for real chest DICOMs, checked by the tools a PACS administrator trusts.

For the NEMA CR (15-bit MONOCHROME1, no Imager Pixel Spacing, no Frame of Reference), the NIH
DX Secondary Capture (8-bit, sparse header) and a manifest JPEG wrapped as CR, build SR, SC and
Parametric Map from a synthetic heatmap and probability, write them, and check: ``dciodvfy``
(no errors), PixelMed's ``DicomSRValidator`` on every SR (no error, no item outside the
templates: ``tests/harness/validators.py``), ``dcentvfy`` over source + results (no
patient/study inconsistency), ``dsrdump`` and ``dsr2html`` (the finding, probability, threshold
and algorithm as a reader sees them, the algorithm's parameters once) and highdicom's SR reader
(``tests/harness/srread.py``). Also runs the input gate over the real DICOMs and broken copies.
"""

from __future__ import annotations

import csv
import html
import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes as pydicom_codes
from pydicom.uid import JPEG2000, JPEG2000Lossless, generate_uid

from tests.harness.factories import CT_IMAGE_STORAGE, CXR_DIR, DICOM_DIR, load_cxr, wrap_pixels
from tests.harness.srread import read_report
from tests.harness.validators import assert_pixelmed_accepts, pixelmed_available
from worker.gate import check
from worker.results import (
    AlgorithmInfo,
    DomainResult,
    ResultObjects,
    build_rejection_sr,
    build_results,
    codes,
)
from worker.results.pmap import wants_parametric_map
from worker.results.sr import percent

TOOLS = ("dciodvfy", "dcentvfy", "dsrdump", "dsr2html", "dcmp2pgm")
THRESHOLD = 0.5
REAL_DICOMS = sorted(DICOM_DIR.glob("*.dcm"))


@pytest.fixture(scope="module", autouse=True)
def _tools() -> None:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    assert not missing, f"missing {missing}: scripts/test-services.sh installs dcmtk, dicom3tools"
    assert pixelmed_available(), "scripts/test-services.sh installs pixelmed-apps"


def _run(*args: str | Path) -> str:
    """Run a validator; stdout and stderr together (dicom3tools report on stderr)."""
    proc = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, errors="replace", timeout=300
    )
    return proc.stdout + proc.stderr


def _errors(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("Error")]


def _display_image(ds: Dataset) -> np.ndarray:
    """MONOCHROME2 floats in [0, 1] (min-max; enough for an overlay test)."""
    pixels = ds.pixel_array.astype(np.float32)
    pixels = (pixels - pixels.min()) / max(float(np.ptp(pixels)), 1.0)
    return 1.0 - pixels if ds.PhotometricInterpretation == "MONOCHROME1" else pixels


def _heatmap(shape: tuple[int, int]) -> np.ndarray:
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    cy, cx = shape[0] * 0.45, shape[1] * 0.6
    blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (shape[0] / 8) ** 2))
    return (0.25 * blob - 0.02).astype(np.float32)


def _build(source: Dataset, probability: float, **kwargs: Any) -> ResultObjects:
    """Results for ``source`` with the synthetic heatmap on its grid and its display image."""
    shape = (int(source.Rows), int(source.Columns))
    return build_results(
        source,
        probability=probability,
        threshold=THRESHOLD,
        heatmap=_heatmap(shape),
        display_image=_display_image(source),
        algorithm=ALGORITHM,
        **kwargs,
    )


def _assert_valid(ds: Dataset, path: Path) -> None:
    """``ds`` saved to ``path`` passes dciodvfy without errors."""
    ds.save_as(path, enforce_file_format=True)
    output = _run("dciodvfy", path)
    assert _errors(output) == [], output


def _wrapped_jpeg() -> Dataset:
    with (CXR_DIR / "manifest.csv").open(newline="") as handle:
        row = next(r for r in csv.DictReader(handle) if r["split"] == "test")
    ds = wrap_pixels(load_cxr(row["path"]), view_position=row["view"] or "PA")
    ds.StudyDescription = "CHEST"
    return ds


ALGORITHM = AlgorithmInfo(
    name="Deep-COVID",
    version="2026.11.27-test",
    device_uid=generate_uid(),
    model_name="squeezenet1_1",
    parameters={"occlusion_window": 32, "occlusion_stride": 8, "threshold": THRESHOLD},
)


@dataclass
class Written:
    source: Path
    sr: Path
    sc: Path
    pm: Path
    pr: Path
    probability: float


SOURCES = {
    "cr-nema": (0.83, lambda: pydicom.dcmread(DICOM_DIR / "RG1_UNCR.dcm")),
    "dx-secondary-capture": (
        0.12,
        lambda: pydicom.dcmread(DICOM_DIR / "nih_chestxray_DX_nhsx_test.dcm"),
    ),
    "jpeg-wrapped-cr": (0.5, _wrapped_jpeg),
}


@pytest.fixture(scope="module", params=list(SOURCES))
def written(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Written:
    probability, load = SOURCES[request.param]
    source = load()
    out = tmp_path_factory.mktemp(request.param)
    source_path = out / "source.dcm"
    source.save_as(source_path)
    results = _build(source, probability)
    paths = {}
    for name, ds in results.items():
        paths[name] = out / f"{name}.dcm"
        ds.save_as(paths[name], enforce_file_format=True)
    return Written(source=source_path, probability=probability, **paths)


def _expected_finding(probability: float) -> str:
    return "Present" if probability >= THRESHOLD else "Absent"


@pytest.mark.parametrize("kind", ["sr", "sc", "pm", "pr"])
def test_dciodvfy_reports_no_errors(written: Written, kind: str) -> None:
    output = _run("dciodvfy", getattr(written, kind))
    assert _errors(output) == [], output


def test_pixelmed_accepts_the_sr(written: Written) -> None:
    """PixelMed's DicomSRValidator: the IOD, TID 1500 and its groups, the context groups."""
    report = assert_pixelmed_accepts(written.sr)
    assert "Root Template Validation Complete" in report.output  # it did check the templates


def test_dcentvfy_finds_patient_and_study_consistent(written: Written) -> None:
    output = _run("dcentvfy", written.source, written.sr, written.sc, written.pm)
    assert _errors(output) == [], output
    assert "Different" not in "\n".join(
        line
        for line in output.splitlines()
        if "present in one instance" not in line and "Different information entities" not in line
    ), output


def _percent(probability: float) -> str:
    """The probability as the SR writes it: percent, cut to 2 decimals (83.0, 12.0, 94.42)."""
    return str(percent(probability))


def test_dsrdump_prints_the_tree_with_the_finding(written: Written) -> None:
    output = _run("dsrdump", written.sr)
    finding = _expected_finding(written.probability)
    assert '<CONTAINER:(,,"Imaging Measurement Report")' in output
    assert '<contains CONTAINER:(,,"Qualitative Evaluations")' in output
    assert '<contains CODE:(,,"COVID-19")=(' in output and f'"{finding}")>' in output
    assert f'<contains NUM:(,,"Probability")="{_percent(written.probability)}" (%,UCUM' in output
    assert '<contains NUM:(,,"Threshold Value")="50.0" (%,UCUM,"Percent")>' in output
    assert f'<contains NUM:(,,"COVID-19 {finding.lower()}")=' in output


def _page_text(sr: Path, page: Path) -> str:
    _run("dsr2html", sr, page)
    text = html.unescape(re.sub(r"<[^>]+>", " ", page.read_text(errors="replace")))
    return re.sub(r"\s+", " ", text)


def test_dsr2html_page_shows_what_a_reader_needs(written: Written, tmp_path: Path) -> None:
    text = _page_text(written.sr, tmp_path / "sr.html")
    finding = _expected_finding(written.probability)
    assert f"Qualitative Evaluations COVID-19: {finding} (" in text
    assert f"Probability: {_percent(written.probability)} %" in text
    assert "Threshold Value: 50.0 %" in text
    assert 'Algorithm Name = "Deep-COVID"' in text
    assert f'Algorithm Version = "{ALGORITHM.version}"' in text
    # The algorithm's parameters once (image-level group), not under each group and number.
    assert text.count("Algorithm Parameters") == len(ALGORITHM.parameters)
    regions = len(read_report(written.sr).region_groups)
    assert text.count('Algorithm Name = "Deep-COVID"') == 1 + regions


def test_highdicom_reads_back_finding_probability_threshold_algorithm(written: Written) -> None:
    report = read_report(written.sr)
    assert isinstance(report.sr, hd.sr.Comprehensive3DSR)
    assert report.verdict == _expected_finding(written.probability)
    group = report.image_group
    assert group is not None and group.finding_type == codes.COVID19
    assert report.numbers(group) == {
        codes.PROBABILITY.meaning: (pytest.approx(percent(written.probability)), "%"),
        codes.THRESHOLD.meaning: (pytest.approx(THRESHOLD * 100), "%"),
    }
    (name,) = group[0].ContentSequence.find(pydicom_codes.DCM.AlgorithmName)
    assert name.value == "Deep-COVID"
    (observer,) = report.sr.content.get_observer_contexts()
    assert observer.observer_identifying_attributes.uid == ALGORITHM.device_uid
    assert report.region_groups, "the synthetic evidence makes at least one region"
    concept = codes.REGION_PROBABILITY[
        {"Present": codes.PRESENT, "Absent": codes.ABSENT}[report.verdict].value
    ]
    for region in report.region_groups:
        assert region.finding_type == codes.COVID19
        assert report.numbers(region) == {
            concept.meaning: (pytest.approx(percent(written.probability)), "%")
        }


def test_pm_and_sc_read_back(written: Written) -> None:
    source = pydicom.dcmread(written.source, stop_before_pixels=True)
    pm = hd.pm.ParametricMap.from_dataset(pydicom.dcmread(written.pm))
    expected = _heatmap((int(source.Rows), int(source.Columns)))
    mapping = pm.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    saliency = pm.pixel_array * float(mapping.RealWorldValueSlope)  # stored: over the maximum
    np.testing.assert_allclose(saliency, expected, rtol=1e-6, atol=1e-7)
    assert float(pm.pixel_array.max()) == pytest.approx(1.0)
    sc = pydicom.dcmread(written.sc)
    assert sc.pixel_array.shape == (source.Rows, source.Columns, 3)
    assert sc.BurnedInAnnotation == "YES"
    for ds in (pm, sc):
        assert ds.StudyInstanceUID == source.StudyInstanceUID
        assert ds.SeriesInstanceUID != source.SeriesInstanceUID


# --- the input gate over the real DICOMs and broken copies --------------------------------


def _pgm(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image)


def test_dcmp2pgm_applies_the_presentation_state(written: Written, tmp_path: Path) -> None:
    """dcmtk renders the source through the GSPS: layers, contours, texts and overlay.

    dcmp2pgm (3.6.7) parses and activates the graphic layers, but its PGM carries only the
    image after the presentation state's VOI and presentation LUT: graphics, text and
    activated overlay planes are not burned in (an overlay embedded in the image is not either,
    where dcm2pnm draws it). Its verbose mode writes each activated overlay plane as dcmtk
    rendered it (``ovl_*.pgm``): composed over the rendered image, that changes the pixels
    along the contours and under the verdict text.
    """
    out = tmp_path / "rendered.pgm"
    proc = subprocess.run(
        ["dcmp2pgm", "-v", "-p", str(written.pr), str(written.source), str(out)],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=300,
        cwd=tmp_path,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log
    assert "Graphic Layer #1 [EVIDENCE]" in log and "type=polyline" in log
    assert "Graphic Layer #2 [VERDICT]" in log
    assert f'text 1: "COVID-19 pattern: {_expected_finding(written.probability).upper()}"' in log
    assert "Number of activated overlays: 1" in log
    rendered = _pgm(out)
    source = pydicom.dcmread(written.source, stop_before_pixels=True)
    assert rendered.shape == (source.Rows, source.Columns)
    (overlay_file,) = tmp_path.glob("ovl_*.pgm")
    overlay = _pgm(overlay_file) > 0
    assert overlay.shape == rendered.shape
    composed = np.where(overlay, 255, rendered)
    changed = composed != rendered
    assert changed.sum() > 1000, "the annotation changes too few pixels"
    # the verdict text is in the top-left corner, the contours around the synthetic evidence
    rows, columns = rendered.shape
    assert changed[: rows // 8, : columns // 2].any()
    assert changed[rows // 4 :, columns // 3 :].any()


@pytest.mark.parametrize("path", REAL_DICOMS, ids=[p.name for p in REAL_DICOMS])
def test_dcmp2pgm_renders_the_gsps_for_every_shared_dicom(path: Path, tmp_path: Path) -> None:
    """The presentation state of each shared DICOM, as dcmtk renders it: both layers, the
    verdict text, the activated overlay changing pixels.

    Debian's DCMTK 3.6.7 has no JPEG 2000 decoder (OFFIS sells that codec apart), so
    ``dcmp2pgm`` cannot read RG1_J2KI / RG1_J2KR's pixels at all ("can't change to
    unencapsulated representation for pixel data"), with or without a presentation state. The
    source is then decompressed first (same SOP Instance UID, so the GSPS still applies to it),
    as a dcmtk-based viewer would need it stored; the GSPS itself is the same for every source.
    """
    source = pydicom.dcmread(path)
    results = _build(source, 0.83)
    pr = tmp_path / "pr.dcm"
    results.gsps.save_as(pr, enforce_file_format=True)
    image = tmp_path / "source.dcm"
    if source.file_meta.TransferSyntaxUID in (JPEG2000, JPEG2000Lossless):
        direct = subprocess.run(
            ["dcmp2pgm", str(path), str(tmp_path / "direct.pgm")],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=300,
        )
        assert direct.returncode != 0 and "unencapsulated representation" in direct.stderr
        source.decompress(generate_instance_uid=False)
    source.save_as(image, enforce_file_format=True)
    proc = subprocess.run(
        ["dcmp2pgm", "-v", "-p", str(pr), str(image), str(tmp_path / "out.pgm")],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=300,
        cwd=tmp_path,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log
    assert "Graphic Layer #1 [EVIDENCE]" in log and "Graphic Layer #2 [VERDICT]" in log
    assert 'text 1: "COVID-19 pattern: PRESENT"' in log
    rendered = _pgm(tmp_path / "out.pgm")
    (overlay_file,) = tmp_path.glob("ovl_*.pgm")
    overlay = _pgm(overlay_file) > 0
    assert (np.where(overlay, 255, rendered) != rendered).sum() > 1000


def test_lossy_source_marks_sc_and_pm_lossy(tmp_path: Path) -> None:
    """RG1_J2KI (JPEG 2000, "01", ratio 10): its SC and map say so, with the method."""
    results = _build(pydicom.dcmread(DICOM_DIR / "RG1_J2KI.dcm"), 0.7)
    for name, ds in (("sc", results.sc), ("pm", results.pmap)):
        assert ds.LossyImageCompression == "01"
        assert float(ds.LossyImageCompressionRatio) == 10.0
        assert ds.LossyImageCompressionMethod == "ISO_15444_1"
        assert ds.DeviceUID == ALGORITHM.device_uid
        _assert_valid(ds, tmp_path / f"{name}.dcm")


def test_results_without_the_map_validate(tmp_path: Path) -> None:
    """Setting ``parametric_map`` leaves the map out (the NEMA CR states no spacing): the SR
    that no longer references it is still valid, and so is what is sent with it."""
    source = pydicom.dcmread(DICOM_DIR / "RG1_UNCR.dcm")
    results = _build(source, 0.7, parametric_map=wants_parametric_map("with_spacing", source))
    assert [kind for kind, _ in results.items()] == ["sc", "pr", "sr"]
    for kind, ds in results.items():
        _assert_valid(ds, tmp_path / f"{kind}.dcm")


def test_indeterminate_sr_validates(tmp_path: Path) -> None:
    """An image outside the model's validated domain: the SR that codes the finding
    Indeterminate (SCT 82334004, pydicom's own code for it) with its reason is still valid."""
    assert pydicom_codes.SCT.Indeterminate == codes.INDETERMINATE
    source = pydicom.dcmread(DICOM_DIR / "RG1_UNCR.dcm")
    results = _build(source, 0.83, domain=DomainResult(score=41.25, threshold=17.15))
    _assert_valid(results.sr, tmp_path / "sr.dcm")
    assert "82334004" in _run("dsrdump", tmp_path / "sr.dcm")
    assert_pixelmed_accepts(tmp_path / "sr.dcm")  # the TEXT reason is TID 1500 row 14
    report = read_report(tmp_path / "sr.dcm")
    assert report.verdict == "Indeterminate" and report.comments


def test_results_naming_the_operating_point_validate(tmp_path: Path) -> None:
    """At a named operating point (setting ``threshold_policy``): every object stays valid and
    the SR's algorithm parameters, as a reader's dump shows them, name the point and value."""
    point = "clinical (sensitivity >= 90 %)"
    algorithm = AlgorithmInfo(
        name=ALGORITHM.name,
        version=ALGORITHM.version,
        device_uid=ALGORITHM.device_uid,
        model_name=ALGORITHM.model_name,
        parameters={**ALGORITHM.parameters, "threshold": 0.41, "operating_point": point},
    )
    source = pydicom.dcmread(DICOM_DIR / "RG1_UNCR.dcm")
    shape = (int(source.Rows), int(source.Columns))
    results = build_results(
        source,
        probability=0.45,
        threshold=0.41,
        heatmap=_heatmap(shape),
        display_image=_display_image(source),
        algorithm=algorithm,
    )
    for kind, ds in results.items():
        _assert_valid(ds, tmp_path / f"{kind}.dcm")
    assert f"operating_point={point}" in _run("dsrdump", "+Pl", tmp_path / "sr.dcm")
    assert f"operating point: {point}, threshold 0.4100" in str(results.sc.ImageComments)


VIEWER_DIR = Path(__file__).resolve().parents[1] / "viewer"


def test_ohif_rule_labels_the_regions_with_the_finding(written: Written) -> None:
    """dcmjs (OHIF's DICOM library) reads the SR; OHIF's rule keeps the SCOORD groups.

    OHIF 3.13.2 labels a TID 1410 region with its NUM items only ("<concept meaning>: <value to
    2 decimals> <unit code>"). Every group has its own region and Tracking UID, so nothing is
    merged: the image-level group (its region the whole image) reads "Probability: 83.00 %" and
    "Threshold Value: 50.00 %", each evidence region one line that names the finding and the
    verdict, "COVID-19 present: 83.00 %". No line is repeated in a text box, and
    the unit is "%", not the bare "1" of UCUM "no units".
    """
    node = shutil.which("node")
    assert node, "node is missing: scripts/test-services.sh installs it"
    assert (VIEWER_DIR.parents[1] / "node_modules" / "dcmjs").is_dir(), "run scripts/install-npm.sh"
    proc = subprocess.run(
        [node, str(VIEWER_DIR / "sr_check.mjs"), str(written.sr)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    seen = json.loads(proc.stdout)
    source = pydicom.dcmread(written.source, stop_before_pixels=True)
    finding = _expected_finding(written.probability)
    assert seen["verdict"] == finding
    # Every measurement OHIF makes has a region: a merged group without one breaks its viewport.
    assert seen["withoutRegion"] == 0, seen["shown"]
    shown = seen["shown"]
    assert len(shown) == len(seen["groups"]), "no two groups share a Tracking UID"
    value = f"{percent(written.probability):.2f} %"
    image, *regions = shown
    assert image["textBox"] == [
        f"Probability: {value}",
        f"Threshold Value: {THRESHOLD * 100:.2f} %",
    ]
    assert image["finding"] == "COVID-19"
    outline = np.array(image["scoord"]["points"])
    assert outline[:, 0].max() == source.Columns and outline[:, 1].max() == source.Rows
    assert regions, "the synthetic evidence makes at least one region"
    for group in regions:
        # the one line OHIF writes next to the region
        assert group["textBox"] == [f"COVID-19 {finding.lower()}: {value}"]
        assert group["finding"] == "COVID-19"
        scoord = group["scoord"]
        assert scoord["graphicType"] == "POLYLINE"
        assert scoord["referencedSOPInstanceUID"] == source.SOPInstanceUID
        points = np.array(scoord["points"])
        assert len(points) >= 4 and np.allclose(points[0], points[-1])  # closed contour
        assert points[:, 0].min() >= 0 and points[:, 0].max() <= source.Columns
        assert points[:, 1].min() >= 0 and points[:, 1].max() <= source.Rows
    # The synthetic evidence is a blob centred at (0.6 columns, 0.45 rows): the contour is
    # around it.
    points = np.array(regions[0]["scoord"]["points"])
    centre = points[:-1].mean(axis=0) / [source.Columns, source.Rows]
    assert centre == pytest.approx([0.6, 0.45], abs=0.05)


@pytest.mark.parametrize("path", REAL_DICOMS, ids=[p.name for p in REAL_DICOMS])
def test_gate_accepts_every_real_dicom(path: Path) -> None:
    assert check(pydicom.dcmread(path)).ok


def _lateral(ds: Dataset) -> None:
    ds.ViewPosition = "LL"


def _ct(ds: Dataset) -> None:
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.Modality = "CT"


def _rgb(ds: Dataset) -> None:
    gray = (ds.pixel_array >> 7).astype(np.uint8)
    ds.PixelData = np.repeat(gray[..., None], 3, axis=-1).tobytes()
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7


def _multiframe(ds: Dataset) -> None:
    ds.NumberOfFrames = 2
    ds.PixelData = ds.PixelData * 2


def _skull(ds: Dataset) -> None:
    ds.BodyPartExamined = "SKULL"


def _truncated(ds: Dataset) -> None:
    ds.PixelData = ds.PixelData[:1000]


@pytest.mark.parametrize(
    ("modify", "reason_start"),
    [
        (_lateral, "ViewPosition LL: lateral views are not analysed"),
        (_ct, f"SOPClassUID {CT_IMAGE_STORAGE}"),
        (_rgb, "PhotometricInterpretation RGB"),
        (_multiframe, "NumberOfFrames 2"),
        (_skull, "BodyPartExamined SKULL"),
        (_truncated, "PixelData 1000 bytes"),
    ],
    ids=["lateral", "ct", "rgb", "multiframe", "skull", "truncated"],
)
def test_gate_rejects_modified_copies(modify, reason_start: str) -> None:
    ds = pydicom.dcmread(DICOM_DIR / "RG1_UNCR.dcm")
    modify(ds)
    result = check(ds)
    assert not result.ok
    assert result.reason is not None and result.reason.startswith(reason_start), result.reason


def test_rejection_sr_for_a_lateral_copy_validates(tmp_path: Path) -> None:
    source = pydicom.dcmread(DICOM_DIR / "RG1_UNCR.dcm")
    _lateral(source)
    reason = check(source).reason
    assert reason is not None
    sr = build_rejection_sr(
        source,
        reason,
        algorithm=ALGORITHM,
        series_instance_uid=generate_uid(),
        sop_instance_uid=generate_uid(),
        series_number=9004,
    )
    path = tmp_path / "rejection.dcm"
    _assert_valid(sr, path)
    assert_pixelmed_accepts(path)
    assert read_report(path).comments == (f"Not analysed: {reason}",)
    assert _errors(_run("dcentvfy", DICOM_DIR / "RG1_UNCR.dcm", path)) == []
    assert f"Not analysed: {reason}"[:40] in _run("dsrdump", "+Pl", path)
