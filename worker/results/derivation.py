"""What a derived image (the overlay SC, the Parametric Map) carries over from its source.

* Lossy Image Compression (PS3.3 C.7.6.1.1.5): once an image has been lossy compressed, every
  image derived from it says so, with the ratio and the method. The source's own values are
  carried; where it states none but arrived in a lossy transfer syntax (JPEG baseline), "01"
  is set; the method is taken from the source, else named after its transfer syntax. Ratio
  and method are written only as far as they are known (both are Type 3, and the method's
  values correspond one to one to the ratio's).
* Device UID (0018,1002, General Equipment): the trained model's UID, the same UID the SR
  gives its device observer, so every object names the model that made it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydicom.dataset import Dataset

from worker.results.algorithm import AlgorithmInfo

LOSSY_SYNTAXES = {
    "1.2.840.10008.1.2.4.50": "ISO_10918_1",  # JPEG baseline: always lossy
    "1.2.840.10008.1.2.4.51": "ISO_10918_1",  # JPEG extended: always lossy
}
"""Transfer syntaxes that are lossy whatever the header says, and their method."""

METHOD_OF_SYNTAX = {
    **LOSSY_SYNTAXES,
    "1.2.840.10008.1.2.4.81": "ISO_14495_1",  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.91": "ISO_15444_1",  # JPEG 2000 (lossy when the header says so)
    "1.2.840.10008.1.2.4.93": "ISO_15444_1",
    "1.2.840.10008.1.2.4.203": "ISO_15444_15",  # HTJ2K
}
"""Lossy Image Compression Method (CID 7214 terms) named after the transfer syntax."""


def _transfer_syntax(source: Dataset) -> str:
    meta = getattr(source, "file_meta", None)
    return str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""


def _values(source: Dataset, keyword: str) -> list[Any]:
    """The attribute's values as a list, as stored (DS numbers keep their text)."""
    value = source.get(keyword)
    if value is None or value == "":
        return []
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        return [value]
    return list(value)


def carry_lossy_compression(source: Dataset, target: Dataset) -> None:
    """Set Lossy Image Compression (and its ratio and method) on ``target`` from ``source``."""
    syntax = _transfer_syntax(source)
    lossy = str(source.get("LossyImageCompression") or "") == "01" or syntax in LOSSY_SYNTAXES
    if not lossy:
        return
    target.LossyImageCompression = "01"
    ratios = _values(source, "LossyImageCompressionRatio")
    methods = _values(source, "LossyImageCompressionMethod")
    if not methods and syntax in METHOD_OF_SYNTAX and len(ratios) <= 1:
        methods = [METHOD_OF_SYNTAX[syntax]]
    for keyword in ("LossyImageCompressionRatio", "LossyImageCompressionMethod"):
        if keyword in target:
            del target[keyword]
    if ratios:
        target.LossyImageCompressionRatio = ratios
    if methods and (not ratios or len(methods) == len(ratios)):
        target.LossyImageCompressionMethod = methods


def set_device_uid(target: Dataset, algorithm: AlgorithmInfo) -> None:
    """General Equipment Device UID: the model's UID (the SR's device observer UID)."""
    target.DeviceUID = algorithm.device_uid
