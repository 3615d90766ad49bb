"""Derived images carry the source's lossy compression history and name the model's device."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset, FileMetaDataset

from worker.results import AlgorithmInfo, build_results
from worker.results.derivation import carry_lossy_compression


def _source(syntax: str, **attrs: object) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    for keyword, value in attrs.items():
        setattr(ds, keyword, value)
    return ds


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        # RG1_J2KI: "01", ratio 10, no method; JPEG 2000 -> ISO_15444_1
        (
            _source(
                "1.2.840.10008.1.2.4.91", LossyImageCompression="01", LossyImageCompressionRatio=10
            ),
            ("01", [10.0], ["ISO_15444_1"]),
        ),
        # JPEG baseline without a header flag: lossy all the same
        (_source("1.2.840.10008.1.2.4.50"), ("01", None, ["ISO_10918_1"])),
        # two earlier compressions, stated by the source: carried as they are
        (
            _source(
                "1.2.840.10008.1.2.1",
                LossyImageCompression="01",
                LossyImageCompressionRatio=["10", "5"],
                LossyImageCompressionMethod=["ISO_10918_1", "ISO_15444_1"],
            ),
            ("01", [10.0, 5.0], ["ISO_10918_1", "ISO_15444_1"]),
        ),
        (_source("1.2.840.10008.1.2.4.91"), None),  # lossless JPEG 2000
        (_source("1.2.840.10008.1.2.1", LossyImageCompression="00"), None),
    ],
)
def test_lossy_compression_carried(source: Dataset, expected) -> None:
    target = Dataset()
    carry_lossy_compression(source, target)
    if expected is None:
        assert "LossyImageCompression" not in target
        return
    flag, ratios, methods = expected
    assert target.LossyImageCompression == flag
    got_ratios = target.get("LossyImageCompressionRatio")
    got_methods = target.get("LossyImageCompressionMethod")
    assert (None if got_ratios is None else [float(v) for v in _list(got_ratios)]) == ratios
    assert (None if got_methods is None else [str(v) for v in _list(got_methods)]) == methods


def _list(value: object) -> list[object]:
    if isinstance(value, str | int | float):
        return [value]
    return list(value)  # type: ignore[call-overload]


def test_sc_and_pm_name_the_model_device(
    source: Dataset, algorithm: AlgorithmInfo, heatmap, display_image
) -> None:
    source.LossyImageCompression = "01"
    source.LossyImageCompressionRatio = 12
    results = build_results(
        source,
        probability=0.8,
        threshold=0.42,
        heatmap=heatmap,
        display_image=display_image,
        algorithm=algorithm,
    )
    for ds in (results.sc, results.pmap, results.gsps):
        assert ds.DeviceUID == algorithm.device_uid
    for ds in (results.sc, results.pmap):
        assert ds.LossyImageCompression == "01"
        assert float(ds.LossyImageCompressionRatio) == 12.0
