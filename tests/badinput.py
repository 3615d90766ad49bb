"""A corpus of malformed and hostile inputs for the listener, the gate and the pixel pipeline.

Each :class:`Case` builds its input in a temporary folder at test time -- nothing here is
stored -- and declares the outcome the node must give it:

- a C-STORE status from the listener (0xC000 for a broken structure, 0xA900 for bad or
  mismatching UIDs, 0x0122 for a class the node does not take) and a fragment of the Error
  Comment;
- or 0x0000 (stored), then the job's final state (``rejected``/``failed``/``delivered``) and a
  fragment of its reason;
- or an association / presentation context refused during negotiation (AE titles, transfer
  syntaxes and SOP classes the node does not negotiate).

Crafted datasets are sent as Part 10 files *unparsed* (pynetdicom's chunked sending: the bytes
after the file meta go on the wire as they are), so the node's own structural check is what
answers malformed bytes. Associations with hostile AE titles are raw A-ASSOCIATE-RQ PDUs, since
pynetdicom refuses to encode them.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

import numpy as np
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    RLELossless,
    generate_uid,
)

from tests.harness.factories import CR_IMAGE_STORAGE, CXR_DIR, load_cxr, wrap_pixels

SC_STORAGE = "1.2.840.10008.5.1.4.1.1.7"
CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
VERIFICATION = "1.2.840.10008.1.1"
IMAGE = "images/covid/figure1__covid__COVID-00001.jpg"
SIZE = 128
"""Side of the corpus images: above the gate's 64-pixel minimum, cheap to analyse."""
PATIENT_NAME = "Hostile^Input"
PATIENT_ID = "BADINPUT-PID-4711"
ALLOWED_AES = ("TESTSCU", "MODALITY", "ECHOSCU")
"""Calling AE titles the node under test allows: the corpus, the cluster sender, its echo."""
CALLED_AE = "DEEPCOVID"
BOMB_MIB = 1024
"""Inflated size of the deflate bomb; its deflated stream is about a thousandth of that."""

# outcome kinds
STORED = "stored"  # C-STORE answered; ``status`` says how
ASSOC_REJECTED = "association rejected"  # A-ASSOCIATE-RJ
ASSOC_NOT_ACCEPTED = "association not accepted"  # RJ or abort/close, never A-ASSOCIATE-AC
CONTEXT_REJECTED = "presentation context rejected"


@dataclass(frozen=True)
class Expect:
    """What the node must answer: ``kind``, then the C-STORE status and the job's fate."""

    kind: str = STORED
    status: int | None = None
    comment: str | None = None
    """A fragment of the C-STORE response's Error Comment (failure statuses only)."""
    state: str | None = None
    """The job's final state (status 0x0000 only)."""
    reason: str | None = None
    """A fragment of the job's reason (status 0x0000, state rejected/failed)."""


@dataclass(frozen=True)
class Store:
    """One C-STORE of a Part 10 file sent unparsed: request UIDs come from its file meta."""

    path: Path
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str
    wait_final_before_next: bool = False
    """Wait until this instance's job is final before the next send (duplicates)."""


@dataclass(frozen=True)
class Associate:
    """A raw A-ASSOCIATE-RQ with these 16-byte AE fields (and optionally a lying length)."""

    calling: bytes
    called: bytes = CALLED_AE.encode().ljust(16)
    pdu_length: int | None = None


Input = list[Store] | Associate


@dataclass(frozen=True)
class Case:
    """One corpus entry: a name, how to build its input in ``tmp``, what must happen."""

    name: str
    build: Callable[[Path], Input]
    expect: Expect
    notes: str = ""
    tags: tuple[str, ...] = field(default=())


# --- building blocks -----------------------------------------------------------------------
def base_pixels() -> np.ndarray:
    """A real chest radiograph scaled to SIZE x SIZE (uint8); a ramp when data is absent."""
    if (CXR_DIR / IMAGE).exists():
        from PIL import Image

        img = Image.fromarray(load_cxr(IMAGE)).resize((SIZE, SIZE))
        return np.asarray(img, dtype=np.uint8)
    return (np.arange(SIZE * SIZE, dtype=np.uint32).reshape(SIZE, SIZE) % 251).astype(np.uint8)


def good(**kwargs: object) -> Dataset:
    """A valid frontal chest CR (fresh UIDs, known patient identifiers)."""
    kwargs.setdefault("patient_name", PATIENT_NAME)
    kwargs.setdefault("patient_id", PATIENT_ID)
    ds = wrap_pixels(base_pixels(), **kwargs)  # type: ignore[arg-type]
    ds["PixelData"].VR = "OB"  # resolved now, so that parts of it encode on their own
    return ds


def encode(ds: Dataset, syntax: str = ExplicitVRLittleEndian) -> bytes:
    """The dataset as it goes on the wire (no file meta), little endian."""
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = False
    write_dataset(buffer, ds)
    data = buffer.getvalue()
    if syntax == DeflatedExplicitVRLittleEndian:
        compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        data = compressor.compress(data) + compressor.flush()
    return data


def part10(
    tmp: Path,
    body: bytes,
    *,
    sop_class_uid: str,
    sop_instance_uid: str,
    syntax: str = ExplicitVRLittleEndian,
    wait: bool = False,
) -> Store:
    """A Part 10 file: preamble, a file meta naming these UIDs, then ``body`` verbatim."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = syntax
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    buffer = BytesIO()
    buffer.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(buffer, meta, enforce_standard=True)  # type: ignore[arg-type]
    path = tmp / f"{generate_uid()[-20:]}.dcm"
    path.write_bytes(buffer.getvalue() + body)
    return Store(path, sop_class_uid, sop_instance_uid, syntax, wait)


def send_ds(tmp: Path, ds: Dataset, syntax: str = ExplicitVRLittleEndian) -> list[Store]:
    """The dataset sent as-is under its own SOP Class / Instance UIDs."""
    return [
        part10(
            tmp,
            encode(ds, syntax),
            sop_class_uid=str(ds.SOPClassUID),
            sop_instance_uid=str(ds.SOPInstanceUID),
            syntax=syntax,
        )
    ]


def send_bytes(tmp: Path, body: bytes, syntax: str = ExplicitVRLittleEndian) -> list[Store]:
    """Raw bytes sent as the dataset of a CR with a fresh, valid request UID."""
    return [
        part10(
            tmp,
            body,
            sop_class_uid=CR_IMAGE_STORAGE,
            sop_instance_uid=generate_uid(),
            syntax=syntax,
        )
    ]


def element(group: int, elem: int, vr: bytes, value: bytes) -> bytes:
    """One explicit VR little endian element (defined length)."""
    if vr in (b"OB", b"OW", b"SQ", b"UN", b"UT", b"UC", b"UR", b"OD", b"OF", b"OL"):
        return struct.pack("<HH2sHI", group, elem, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", group, elem, vr, len(value)) + value


def undefined(group: int, elem: int, vr: bytes, content: bytes) -> bytes:
    """An explicit VR element of undefined length (``content`` must hold its delimiters)."""
    return struct.pack("<HH2sHI", group, elem, vr, 0, 0xFFFFFFFF) + content


ITEM = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
ITEM_END = struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
SEQ_END = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)


def patched(ds: Dataset, old: bytes, new: bytes) -> bytes:
    """The encoded dataset with the first occurrence of ``old`` replaced by ``new``."""
    data = encode(ds)
    assert old in data, f"{old!r} not in the encoded dataset"
    return data.replace(old, new, 1)


def splice_sorted(ds: Dataset, raw: bytes, tag: int) -> bytes:
    """The encoded dataset with a raw element ``raw`` inserted where ``tag`` sorts."""
    before, after = Dataset(), Dataset()
    for elem in ds:
        (before if elem.tag < tag else after).add(elem)
    return encode(before) + raw + encode(after)


def modified(**changes: object) -> Callable[[Path], list[Store]]:
    """A builder: the good dataset with ``changes`` (None deletes) sent as-is."""

    def build(tmp: Path) -> list[Store]:
        ds = good()
        for keyword, value in changes.items():
            if value is None:
                delattr(ds, keyword)
            else:
                setattr(ds, keyword, value)
        return send_ds(tmp, ds)

    return build


def rejected(reason: str) -> Expect:
    return Expect(status=0x0000, state="rejected", reason=reason)


def refused(status: int, comment: str) -> Expect:
    return Expect(status=status, comment=comment)


# --- the cases -------------------------------------------------------------------------------
def _truncated_header(tmp: Path) -> list[Store]:
    data = encode(good())
    return send_bytes(tmp, data[:300])  # cut inside the header elements


def _truncated_pixels(tmp: Path) -> list[Store]:
    ds = good()
    return [
        part10(
            tmp,
            encode(ds)[:-1000],
            sop_class_uid=CR_IMAGE_STORAGE,
            sop_instance_uid=str(ds.SOPInstanceUID),
        )
    ]


def _preamble_in_dataset(tmp: Path) -> list[Store]:
    ds = good()  # a sender that streams the whole file, preamble and DICM included
    body = b"\0" * 128 + b"DICM" + encode(ds)
    return [part10(tmp, body, sop_class_uid=CR_IMAGE_STORAGE, sop_instance_uid=ds.SOPInstanceUID)]


def _broken_dicm(tmp: Path) -> list[Store]:
    ds = good()
    body = b"\xff" * 128 + b"DICX" + encode(ds)[:64]
    return [part10(tmp, body, sop_class_uid=CR_IMAGE_STORAGE, sop_instance_uid=ds.SOPInstanceUID)]


def _text_garbage(tmp: Path) -> list[Store]:
    return send_bytes(tmp, b"This is not DICOM: <html><body>404</body></html>\n" * 20)


def _binary_vr(tmp: Path) -> list[Store]:
    ds = good()
    body = patched(ds, b"\x28\x00\x10\x00US", b"\x28\x00\x10\x00\x00\x01")
    return [part10(tmp, body, sop_class_uid=CR_IMAGE_STORAGE, sop_instance_uid=ds.SOPInstanceUID)]


def _lowercase_vr(tmp: Path) -> list[Store]:
    ds = good()
    body = patched(ds, b"\x08\x00\x60\x00CS", b"\x08\x00\x60\x00cs")
    return [part10(tmp, body, sop_class_uid=CR_IMAGE_STORAGE, sop_instance_uid=ds.SOPInstanceUID)]


def _header_length_past_end(tmp: Path) -> list[Store]:
    ds = good()
    name = PATIENT_NAME.encode()
    name += b" " * (len(name) % 2)
    old = b"\x10\x00\x10\x00PN" + struct.pack("<H", len(name))
    body = patched(ds, old, b"\x10\x00\x10\x00PN\xf0\xff")
    return [part10(tmp, body, sop_class_uid=CR_IMAGE_STORAGE, sop_instance_uid=ds.SOPInstanceUID)]


def _pixel_length_lie(tmp: Path) -> list[Store]:
    ds = good()  # Pixel Data declares 4 GiB - 2
    old = b"\xe0\x7f\x10\x00OB\x00\x00" + struct.pack("<I", SIZE * SIZE)
    body = patched(ds, old, b"\xe0\x7f\x10\x00OB\x00\x00\xfe\xff\xff\xff")
    return [part10(tmp, body, sop_class_uid=CR_IMAGE_STORAGE, sop_instance_uid=ds.SOPInstanceUID)]


def _undefined_length_text(tmp: Path) -> list[Store]:
    ds = good()
    body = splice_sorted(ds, undefined(0x0008, 0x1030, b"UT", b"abcd"), 0x00081030)
    return [part10(tmp, body, sop_class_uid=CR_IMAGE_STORAGE, sop_instance_uid=ds.SOPInstanceUID)]


def _out_of_order(tmp: Path) -> list[Store]:
    ds = good()
    body = encode(ds) + element(0x0008, 0x0060, b"CS", b"CT")  # Modality again, after pixels
    return [part10(tmp, body, sop_class_uid=CR_IMAGE_STORAGE, sop_instance_uid=ds.SOPInstanceUID)]


def _unterminated_sequence(tmp: Path) -> list[Store]:
    ds = good()
    seq = undefined(0x7FE1, 0x1001, b"SQ", ITEM + element(0x0008, 0x1150, b"UI", b"1.2\0"))
    body = encode(ds) + element(0x7FE1, 0x0010, b"LO", b"x ") + seq  # ends inside the item
    return [part10(tmp, body, sop_class_uid=CR_IMAGE_STORAGE, sop_instance_uid=ds.SOPInstanceUID)]


def _deep_nesting(tmp: Path) -> list[Store]:
    ds = good()
    inner = element(0x0008, 0x0100, b"SH", b"12")
    for _ in range(200):
        inner = undefined(0x0040, 0xA730, b"SQ", ITEM + inner + ITEM_END + SEQ_END)
    body = splice_sorted(ds, inner, 0x0040A730)
    return [part10(tmp, body, sop_class_uid=CR_IMAGE_STORAGE, sop_instance_uid=ds.SOPInstanceUID)]


def _bad_deflate(tmp: Path) -> list[Store]:
    return send_bytes(tmp, b"\x78\x9c this is not a deflate stream", DeflatedExplicitVRLittleEndian)


def _deflate_bomb(tmp: Path) -> list[Store]:
    # 1 GiB of zeros deflate to ~1 MiB; inflated they are (0000,0000) elements with no VR
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    chunk = b"\0" * (64 * 2**20)
    body = b"".join(compressor.compress(chunk) for _ in range(BOMB_MIB // 64)) + compressor.flush()
    return send_bytes(tmp, body, DeflatedExplicitVRLittleEndian)


def _empty_dataset(tmp: Path) -> list[Store]:
    return send_bytes(tmp, b"")


def _dataset_uid(value: bytes) -> Callable[[Path], list[Store]]:
    """The good dataset whose SOP Instance UID bytes are ``value``; the request's is valid."""

    def build(tmp: Path) -> list[Store]:
        ds = good()
        request_uid = generate_uid()
        ds.SOPInstanceUID = "9" * 20  # placeholder, replaced in the bytes
        padded = value + b"\0" * (len(value) % 2)
        old = b"\x08\x00\x18\x00UI\x14\x00" + b"9" * 20
        new = b"\x08\x00\x18\x00UI" + struct.pack("<H", len(padded)) + padded
        body = patched(ds, old, new)
        return [part10(tmp, body, sop_class_uid=CR_IMAGE_STORAGE, sop_instance_uid=request_uid)]

    return build


def _request_uid(value: str) -> Callable[[Path], list[Store]]:
    """The dataset and the request both carry SOP Instance UID ``value`` (a path, say)."""

    def build(tmp: Path) -> list[Store]:
        ds = good()
        ds.SOPInstanceUID = value
        return [part10(tmp, encode(ds), sop_class_uid=CR_IMAGE_STORAGE, sop_instance_uid=value)]

    return build


def _uid_mismatch(tmp: Path) -> list[Store]:
    ds = good()
    return [
        part10(tmp, encode(ds), sop_class_uid=CR_IMAGE_STORAGE, sop_instance_uid=generate_uid())
    ]


def _sr(tmp: Path) -> list[Store]:
    ds = good(sop_class_uid=COMPREHENSIVE_SR)
    return send_ds(tmp, ds)


def _unknown_class(tmp: Path) -> list[Store]:
    ds = good(sop_class_uid="1.2.3.4.5.6.7")
    return send_ds(tmp, ds)


def _syntax(uid: str) -> Callable[[Path], list[Store]]:
    def build(tmp: Path) -> list[Store]:
        ds = good()
        return [
            part10(
                tmp,
                encode(ds),
                sop_class_uid=CR_IMAGE_STORAGE,
                sop_instance_uid=ds.SOPInstanceUID,
                syntax=uid,
            )
        ]

    return build


def _huge_private(tmp: Path) -> list[Store]:
    ds = good(view_position="LL")
    ds.add_new(0x00B10010, "LO", "HOSTILE PRIVATE")
    ds.add_new(0x00B11000, "OB", b"\xa5" * (24 * 2**20))
    return send_ds(tmp, ds)


def _rows_ul(value: int, vr: str = "UL") -> Callable[[Path], list[Store]]:
    def build(tmp: Path) -> list[Store]:
        ds = good()
        ds[0x00280010] = DataElement(0x00280010, vr, value)
        ds[0x00280011] = DataElement(0x00280011, vr, value)
        return send_ds(tmp, ds)

    return build


def _declared(rows: int, columns: int, bits: int) -> Callable[[Path], list[Store]]:
    """Rows x Columns x bits declared; only the small image's pixels follow."""

    def build(tmp: Path) -> list[Store]:
        ds = good()
        ds.Rows, ds.Columns = rows, columns
        ds.BitsAllocated = ds.BitsStored = bits
        ds.HighBit = bits - 1
        return send_ds(tmp, ds)

    return build


def _rgb(photometric: str) -> Callable[[Path], list[Store]]:
    def build(tmp: Path) -> list[Store]:
        ds = good(sop_class_uid=SC_STORAGE)
        ds.SamplesPerPixel = 3
        ds.PlanarConfiguration = 0
        ds.PhotometricInterpretation = photometric
        ds.PixelData = np.repeat(base_pixels()[..., None], 3, axis=2).tobytes()
        return send_ds(tmp, ds)

    return build


def _palette(tmp: Path) -> list[Store]:
    ds = good()
    ds.PhotometricInterpretation = "PALETTE COLOR"
    lut = np.arange(256, dtype=np.uint16) * 257
    for colour in ("Red", "Green", "Blue"):
        setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [256, 0, 16])
        setattr(ds, f"{colour}PaletteColorLookupTableData", lut.tobytes())
    return send_ds(tmp, ds)


def _multiframe(tmp: Path) -> list[Store]:
    ds = good()
    ds.NumberOfFrames = 2
    ds.PixelData = base_pixels().tobytes() * 2
    return send_ds(tmp, ds)


def _frames_text(tmp: Path) -> list[Store]:
    ds = good()
    body = splice_sorted(ds, element(0x0028, 0x0008, b"IS", b"ab"), 0x00280008)
    return [part10(tmp, body, sop_class_uid=CR_IMAGE_STORAGE, sop_instance_uid=ds.SOPInstanceUID)]


def _signed(tmp: Path) -> list[Store]:
    pixels = base_pixels().astype(np.int16) * 64 - 8192
    ds = wrap_pixels(
        pixels, signed=True, bits_stored=16, patient_name=PATIENT_NAME, patient_id=PATIENT_ID
    )
    return send_ds(tmp, ds)


def _fake_compressed(syntax: str) -> Callable[[Path], list[Store]]:
    """Encapsulated Pixel Data in ``syntax`` whose one fragment is not what it claims."""

    def build(tmp: Path) -> list[Store]:
        ds = good()
        del ds.PixelData
        fragment = (
            b"\xff\xd8\xff\xe0" + b"\x13\x37" * 50
            if syntax == JPEGBaseline8Bit
            else (
                struct.pack("<16I", 15, *([64] + [0] * 14)) + b"\x7f" * 40  # RLE header lying
            )
        )
        item = struct.pack("<HHI", 0xFFFE, 0xE000, len(fragment)) + fragment
        bot = struct.pack("<HHI", 0xFFFE, 0xE000, 0)
        pixels = undefined(0x7FE0, 0x0010, b"OB", bot + item + SEQ_END)
        body = encode(ds) + pixels
        return [
            part10(
                tmp,
                body,
                sop_class_uid=CR_IMAGE_STORAGE,
                sop_instance_uid=ds.SOPInstanceUID,
                syntax=syntax,
            )
        ]

    return build


def _float_pixels(tmp: Path) -> list[Store]:
    ds = good()
    del ds.PixelData
    ds.FloatPixelData = base_pixels().astype(np.float32).tobytes()
    return send_ds(tmp, ds)


def _charset_soup(tmp: Path) -> list[Store]:
    ds = good(view_position="LL")
    ds.SpecificCharacterSet = "ISO_IR 999"
    body = patched(
        ds, PATIENT_NAME.encode(), "Ünïcødé^Ø".encode("latin-1").ljust(len(PATIENT_NAME))
    )
    return [part10(tmp, body, sop_class_uid=CR_IMAGE_STORAGE, sop_instance_uid=ds.SOPInstanceUID)]


def _rescale_text(intercept: bytes, slope: bytes) -> Callable[[Path], list[Store]]:
    """Rescale Intercept / Slope with raw DS text (which pydicom would refuse to write)."""

    def build(tmp: Path) -> list[Store]:
        ds = good()
        raw = element(0x0028, 0x1052, b"DS", intercept) + element(0x0028, 0x1053, b"DS", slope)
        body = splice_sorted(ds, raw, 0x00281052)
        return [
            part10(tmp, body, sop_class_uid=CR_IMAGE_STORAGE, sop_instance_uid=ds.SOPInstanceUID)
        ]

    return build


def _vr_swapped(tmp: Path, old: bytes, new: bytes) -> Store:
    """A frontal CR (rescale 1/0) where one element header's VR is replaced by ``new``'s.

    The listener's structural check takes any two upper-case letters as a VR; pydicom only
    fails when the worker converts the value.
    """
    ds = good(rescale=(1.0, 0.0))
    return part10(
        tmp,
        patched(ds, old, new),
        sop_class_uid=CR_IMAGE_STORAGE,
        sop_instance_uid=ds.SOPInstanceUID,
    )


def _duplicate(tmp: Path) -> list[Store]:
    """Same SOP Instance UID twice, different content: the second replaces the first."""
    uid = generate_uid()
    first = good(view_position="LL", sop_instance_uid=uid)
    second = good(body_part="SKULL", sop_instance_uid=uid)
    one = part10(
        tmp, encode(first), sop_class_uid=CR_IMAGE_STORAGE, sop_instance_uid=uid, wait=True
    )
    two = part10(tmp, encode(second), sop_class_uid=CR_IMAGE_STORAGE, sop_instance_uid=uid)
    return [one, two]


def _ae(calling: bytes, **kwargs: object) -> Callable[[Path], Associate]:
    def build(tmp: Path) -> Associate:
        del tmp
        return Associate(calling=calling, **kwargs)  # type: ignore[arg-type]

    return build


def _pixels_gone(tmp: Path) -> list[Store]:
    ds = good()
    del ds.PixelData
    return send_ds(tmp, ds)


def _short_pixels(tmp: Path) -> list[Store]:
    ds = good()
    ds.PixelData = ds.PixelData[: SIZE * SIZE // 2]
    return send_ds(tmp, ds)


def _bits(allocated: int, stored: int, high: int | None = None) -> Callable[[Path], list[Store]]:
    def build(tmp: Path) -> list[Store]:
        ds = good()
        ds.BitsAllocated, ds.BitsStored = allocated, stored
        ds.HighBit = stored - 1 if high is None else high
        return send_ds(tmp, ds)

    return build


C000 = 0xC000
A900 = 0xA900

CASES: tuple[Case, ...] = (
    # --- structure: the listener's strict check answers 0xC000 -----------------------------
    Case("truncated in the header", _truncated_header, refused(C000, "malformed")),
    Case("truncated in Pixel Data", _truncated_pixels, refused(C000, "runs past")),
    Case("preamble and DICM streamed as dataset", _preamble_in_dataset, refused(C000, "malformed")),
    Case("broken preamble, DICX magic", _broken_dicm, refused(C000, "malformed")),
    Case("text, not DICOM", _text_garbage, refused(C000, "no valid VR")),
    Case("binary bytes as VR of Rows", _binary_vr, refused(C000, "no valid VR")),
    Case("lower-case VR", _lowercase_vr, refused(C000, "no valid VR")),
    Case("PatientName length past the end", _header_length_past_end, refused(C000, "runs past")),
    Case("Pixel Data length 4 GiB", _pixel_length_lie, refused(C000, "(7FE0,0010)")),
    Case("undefined length on UT", _undefined_length_text, refused(C000, "undefined length")),
    Case("element out of order", _out_of_order, refused(C000, "out of order")),
    Case("sequence not terminated", _unterminated_sequence, refused(C000, "not terminated")),
    Case("sequences nested 200 deep", _deep_nesting, refused(C000, "nested deeper")),
    Case("deflated syntax, not deflate", _bad_deflate, refused(C000, "cannot be inflated")),
    Case(
        f"deflate bomb ({BOMB_MIB} MiB of zeros)",
        _deflate_bomb,
        refused(C000, "inflates to more than"),
    ),
    # --- UIDs: 0xA900 --------------------------------------------------------------------
    Case("empty dataset", _empty_dataset, refused(A900, "SOPClassUID missing")),
    Case(
        "SOP Instance UID ../ in request and dataset",
        _request_uid("../../../etc/passwd"),
        refused(A900, "AffectedSOPInstanceUID has invalid character"),
    ),
    Case(
        "SOP Instance UID absolute path",
        _request_uid("/tmp/1.2.3"),
        refused(A900, "invalid character"),
    ),
    Case(
        "SOP Instance UID with backslash",
        _dataset_uid(b"1.2.3\\..\\..\\x"),
        refused(A900, "SOPInstanceUID has invalid character"),
    ),
    Case(
        "SOP Instance UID with ../ in dataset only",
        _dataset_uid(b"1.2/../../../tmp/x"),
        refused(A900, "SOPInstanceUID has invalid character"),
    ),
    Case(
        "SOP Instance UID of 65 characters",
        _dataset_uid(b"1." + b"3" * 63),
        refused(A900, "65 characters long"),
    ),
    Case(
        "SOP Instance UID of 200 characters",
        _dataset_uid(b"1." + b"7" * 198),
        refused(A900, "200 characters long"),
    ),
    Case(
        "SOP Instance UID non-ASCII",
        _dataset_uid("1.2.\u00e9".encode()),
        refused(A900, "invalid character"),
    ),
    Case("SOP Instance UID '..'", _dataset_uid(b".."), refused(A900, "empty component")),
    Case("dataset UID differs from request", _uid_mismatch, refused(A900, "differs")),
    # --- classes and transfer syntaxes -----------------------------------------------------
    Case("SR storage", _sr, refused(0x0122, "SOP class not accepted")),
    Case("unknown SOP class", _unknown_class, Expect(kind=CONTEXT_REJECTED)),
    Case("unknown transfer syntax", _syntax("1.2.3.4.5.99"), Expect(kind=CONTEXT_REJECTED)),
    Case("explicit VR big endian", _syntax(ExplicitVRBigEndian), Expect(kind=CONTEXT_REJECTED)),
    # --- the gate: stored, then rejected with a reason ---------------------------------------
    Case(
        "huge private element (24 MiB) on a lateral",
        _huge_private,
        rejected("ViewPosition LL: lateral views"),
    ),
    Case(
        "Rows/Columns 100000 as UL (wrong VR)",
        _rows_ul(100000),
        rejected("Rows 100000 x Columns 100000: image size outside"),
    ),
    Case(
        "Rows/Columns as text (wrong VR)",
        _rows_ul("12345", "UI"),  # type: ignore[arg-type]
        rejected("image size missing"),
    ),
    Case("65535 x 65535 declared", _declared(65535, 65535, 16), rejected("image size outside")),
    Case(
        "16384 x 16384 x 16 bits declared, 16 KiB sent",
        _declared(16384, 16384, 16),
        rejected("truncated pixel data"),
    ),
    Case("Rows 0", _declared(0, SIZE, 8), rejected("image size outside")),
    Case("Pixel Data missing", _pixels_gone, rejected("PixelData missing")),
    Case("Pixel Data half of Rows x Columns", _short_pixels, rejected("truncated pixel data")),
    Case("BitsStored 12 > BitsAllocated 8", _bits(8, 12), rejected("inconsistent")),
    Case("BitsAllocated 12", _bits(12, 12), rejected("inconsistent")),
    Case("HighBit 20 with 8 bits", _bits(8, 8, 20), rejected("HighBit 20")),
    Case("multi-frame (2 frames)", _multiframe, rejected("NumberOfFrames 2")),
    Case("NumberOfFrames not a number", _frames_text, rejected("NumberOfFrames")),
    Case("RGB Secondary Capture", _rgb("RGB"), rejected("PhotometricInterpretation RGB")),
    Case("YBR_FULL", _rgb("YBR_FULL"), rejected("PhotometricInterpretation YBR_FULL")),
    Case("palette colour", _palette, rejected("PhotometricInterpretation PALETTE COLOR")),
    Case("Float Pixel Data", _float_pixels, rejected("floating-point")),
    Case(
        "JPEG syntax, fragment not JPEG",
        _fake_compressed(JPEGBaseline8Bit),
        rejected("could not be decoded"),
    ),
    Case(
        "RLE syntax, lying RLE header",
        _fake_compressed(RLELossless),
        rejected("could not be decoded"),
    ),
    Case("CT image", modified(SOPClassUID=CT_STORAGE, Modality="CT"), rejected("CT Image Storage")),
    Case("unknown charset, non-ASCII name, lateral", _charset_soup, rejected("ViewPosition LL")),
    Case("duplicate UID, different content", _duplicate, rejected("BodyPartExamined SKULL")),
    # --- stored, passes the gate, but its pixels cannot be converted: failed with a reason -
    Case(
        "Rescale Intercept NaN",
        _rescale_text(b"nan ", b"1 "),
        Expect(status=0x0000, state="failed", reason="RescaleIntercept nan: not a finite number"),
    ),
    Case(
        "Rescale Slope text",
        _rescale_text(b"0 ", b"slope!"),
        Expect(status=0x0000, state="failed", reason="RescaleSlope 'slope!': not a number"),
    ),
    Case(
        "unknown VR 'ES' on Rescale Intercept",
        lambda tmp: [_vr_swapped(tmp, b"\x28\x00\x52\x10DS", b"\x28\x00\x52\x10ES")],
        Expect(status=0x0000, state="failed", reason="Unknown Value Representation 'ES'"),
    ),
    Case(
        "unknown VR 'ZZ' on Modality",
        lambda tmp: [_vr_swapped(tmp, b"\x08\x00\x60\x00CS", b"\x08\x00\x60\x00ZZ")],
        Expect(status=0x0000, state="failed", reason="attributes cannot be read"),
    ),
    # --- analysed: odd but valid ----------------------------------------------------------
    Case("signed 16-bit pixels", _signed, Expect(status=0x0000, state="delivered")),
    # --- association: AE titles (raw A-ASSOCIATE-RQ) ---------------------------------------
    Case(
        "calling AE non-ASCII",
        _ae("\u00c9TUDE\u00e9".encode().ljust(16)),
        Expect(kind=ASSOC_NOT_ACCEPTED),
    ),
    Case(
        "calling AE control characters",
        _ae(b"TEST\x01\x02\x1b[2J".ljust(16)),
        Expect(kind=ASSOC_NOT_ACCEPTED),
    ),
    Case(
        "calling AE allowed title + junk (over-long)",
        _ae(b"TESTSCUXXXXXXXXX"),
        Expect(kind=ASSOC_REJECTED),
    ),
    Case("calling AE 16 spaces", _ae(b" " * 16), Expect(kind=ASSOC_NOT_ACCEPTED)),
    Case("calling AE not allowed", _ae(b"INTRUDER".ljust(16)), Expect(kind=ASSOC_REJECTED)),
    Case(
        "called AE wrong",
        _ae(b"TESTSCU".ljust(16), called=b"SOMEONE".ljust(16)),
        Expect(kind=ASSOC_REJECTED),
    ),
    Case(
        "A-ASSOCIATE-RQ length 4 GiB",
        _ae(b"TESTSCU".ljust(16), pdu_length=0xFFFFFFF0),
        Expect(kind=ASSOC_NOT_ACCEPTED),
    ),
)


# --- raw association requests ----------------------------------------------------------------
def _item(kind: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(payload)) + payload


def associate_rq(request: Associate) -> bytes:
    """An A-ASSOCIATE-RQ PDU for Verification with the request's raw AE fields."""
    context = struct.pack(">BBBB", 1, 0, 0, 0)
    context += _item(0x30, VERIFICATION.encode()) + _item(0x40, b"1.2.840.10008.1.2")
    variable = (
        _item(0x10, b"1.2.840.10008.3.1.1.1")
        + _item(0x20, context)
        + _item(0x50, _item(0x51, struct.pack(">I", 16384)))
    )
    fixed = struct.pack(">HH", 1, 0) + request.called[:16] + request.calling[:16] + b"\0" * 32
    body = fixed + variable
    length = len(body) if request.pdu_length is None else request.pdu_length
    return struct.pack(">BBI", 0x01, 0, length) + body


# --- sending ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Answer:
    """What the node answered: outcome kind, C-STORE status and Error Comment."""

    kind: str
    status: int | None = None
    comment: str = ""


def store_file(port: int, item: Store, calling_ae: str = "TESTSCU", timeout: float = 60) -> Answer:
    """C-STORE one file unparsed (pynetdicom chunked sending); the node's answer."""
    from pynetdicom import AE, _config

    _config.STORE_SEND_CHUNKED_DATASET = True
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.add_requested_context(item.sop_class_uid, [item.transfer_syntax])
    ae.add_requested_context(VERIFICATION)  # so a refused storage context is told apart
    assoc = ae.associate("127.0.0.1", port, ae_title=CALLED_AE)
    if not assoc.is_established:
        return Answer(ASSOC_REJECTED if assoc.is_rejected else ASSOC_NOT_ACCEPTED)
    try:
        accepted = [
            cx for cx in assoc.accepted_contexts if cx.abstract_syntax == item.sop_class_uid
        ]
        if not accepted:
            return Answer(CONTEXT_REJECTED)
        rsp = assoc.send_c_store(item.path)
    finally:
        assoc.release()
    if "Status" not in rsp:
        return Answer("no response")
    return Answer(STORED, int(rsp.Status), str(rsp.get("ErrorComment", "")))


def raw_associate(port: int, request: Associate, timeout: float = 30) -> Answer:
    """Send a raw A-ASSOCIATE-RQ; RJ -> rejected, AC -> accepted, else not accepted."""
    import socket

    pdu = associate_rq(request)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(pdu)
        if request.pdu_length is not None:
            sock.shutdown(socket.SHUT_WR)  # the rest of the promised 4 GiB never comes
        try:
            head = sock.recv(10)
        except (ConnectionResetError, TimeoutError):
            head = b""
        if head[:1] == b"\x02":  # A-ASSOCIATE-AC: be polite and release
            sock.sendall(struct.pack(">BBII", 0x05, 0, 4, 0))
            return Answer("association accepted")
    if head[:1] == b"\x03":
        return Answer(ASSOC_REJECTED)
    return Answer(ASSOC_NOT_ACCEPTED)


def outcome_matches(expect: Expect, answer: Answer) -> bool:
    """Whether the node's immediate answer is what the case expects (job fate aside)."""
    if expect.kind == ASSOC_NOT_ACCEPTED:
        return answer.kind in (ASSOC_REJECTED, ASSOC_NOT_ACCEPTED)
    if expect.kind != answer.kind:
        return False
    if expect.kind != STORED:
        return True
    if answer.status != expect.status:
        return False
    return expect.comment is None or expect.comment in answer.comment


def sop_uid_of(path: Path) -> str:
    """The SOP Instance UID in a Part 10 file's meta."""
    from pydicom.filereader import read_file_meta_info

    return str(read_file_meta_info(path).MediaStorageSOPInstanceUID)
