"""The Scan tab's bad-input battery: odd scans a public demo receives, and the answer each must get.

Each :class:`ScanCase` writes one upload (one or more files) into a folder named after the case,
from real Kaggle slices, and says what must happen: ``refuse`` (a regex the one-line message
must match) or ``shape`` (the scan's ``(D, H, W)``). The same table runs through
``app.segment_scan_files``, the HTTP API and ``python -m model.predict`` (tests/test_bad_scan_inputs.py).

Every DICOM here carries the patient tags of :mod:`scan_fixtures`; no message, note, log line
or output file may repeat them. Upload names start with ``upl-`` so a log can be checked for them.
"""

from __future__ import annotations

import functools
import gzip
import io
import shutil
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from scan_fixtures import kaggle_slices, stack, write_dicom_series, write_nifti

SPACING = (3.0, 1.5, 1.5)  # NIfTI fixtures: slice, row, col mm


@dataclass(frozen=True)
class ScanCase:
    id: str
    make: Callable[[Path, Path], list[Path]]  # (folder, shared data) → the files to upload
    refuse: str | None = None  # regex of the one-line message
    shape: tuple[int, int, int] | None = None  # else: the scan's (D, H, W)
    note: str | None = None  # a regex one of the scan's notes must match

    def __post_init__(self):
        assert (self.refuse is None) != (self.shape is None), self.id


# --------------------------------------------------------------------------- writers


def _slices(shared: Path, count: int = 3) -> list[Path]:
    return kaggle_slices(shared, "volume_234x234", count=count)


def _zip(name: str, members: dict[str, bytes | Callable[[Path], bytes]], compression=zipfile.ZIP_DEFLATED):
    def make(folder: Path, shared: Path) -> list[Path]:
        path = folder / name
        with zipfile.ZipFile(path, "w", compression=compression) as archive:
            for member, data in members.items():
                archive.writestr(member, data(shared) if callable(data) else data)
        return [path]
    return make


def _png(shared: Path) -> bytes:
    return _slices(shared, 1)[0].read_bytes()


def _black_png(shared: Path) -> bytes:
    """A 16-bit all-black 64 x 64 slice."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((64, 64), np.uint16)).save(buf, format="PNG")
    return buf.getvalue()


def _kaggle_zip(shared: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for f in _slices(shared):
            archive.write(f, f"scans/{f.name}")
    return buf.getvalue()


@functools.cache
def _deflate_bomb(name: str, unpacked_mib: int) -> bytes:
    """A one-member zip that unpacks to ``unpacked_mib`` MiB of zeros from about 1 KB per MiB.

    zipfile compresses everything it writes, which would take seconds for a GiB, so the zip
    is put together by hand: one MiB of zeros is deflated once, flushed so that the block
    refers to nothing before it, and that block repeated; the headers declare the true size and CRC.
    """
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(bytes(1 << 20)) + compressor.flush(zlib.Z_FULL_FLUSH)
    data = block * unpacked_mib + b"\x03\x00"  # an empty final block ends the stream
    crc = 0
    for _ in range(unpacked_mib):
        crc = zlib.crc32(bytes(1 << 20), crc)
    size, encoded = unpacked_mib << 20, name.encode()
    fields = (20, 0, 8, 0, 0x21, crc, len(data), size, len(encoded))  # version, flags, deflate, time, date, ...
    local = struct.pack("<4s5H3LHH", b"PK\x03\x04", *fields, 0) + encoded
    central = struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, *fields, 0, 0, 0, 0, 0o644 << 16, 0) + encoded
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 1, 1, len(central), len(local) + len(data), 0)
    return local + data + central + end


def _damaged_zip(shared: Path) -> bytes:
    """A stored (uncompressed) zip of a real slice, one byte of the slice flipped: the CRC check fails."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("slice_0027_234_234_1.50_1.50.png", _png(shared))
    damaged = bytearray(buf.getvalue())
    damaged[len(damaged) // 2] ^= 0xFF
    return bytes(damaged)


def _deflate64_zip(shared: Path) -> bytes:
    """A zip whose member claims Deflate64 (method 9), which Windows writes and Python cannot read."""
    data = bytearray(_kaggle_zip(shared))
    for signature, offset in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
        at = data.find(signature)
        while at != -1:
            data[at + offset:at + offset + 2] = struct.pack("<H", 9)
            at = data.find(signature, at + 4)
    return bytes(data)


def _bytes(name: str, data: Callable[[Path], bytes]):
    def make(folder: Path, shared: Path) -> list[Path]:
        (folder / name).write_bytes(data(shared))
        return [folder / name]
    return make


def _nifti(name: str, volumes: int | None = None, two_d: bool = False, truncate: bool = False,
           blank: float | None = None, nan_outside: bool = False):
    """A NIfTI of 3 real slices; ``volumes``: stored 4-D with that many copies; ``two_d``: one slice, 2-D;
    ``blank``: every voxel that value instead (float32); ``nan_outside``: NaN outside the body (float32), as
    some masked exports store it."""
    def make(folder: Path, shared: Path) -> list[Path]:
        import nibabel as nib

        voxels = stack(_slices(shared))
        if blank is not None:
            voxels = np.full(voxels.shape, blank, dtype=np.float32)
        elif nan_outside:
            voxels = np.where(voxels > 0, voxels, np.nan).astype(np.float32)
        path = folder / name
        if volumes is None and not two_d:
            tmp = folder / "scan.nii.gz"
            write_nifti(voxels, SPACING, tmp)
            data = tmp.read_bytes()
            tmp.unlink()
            path.write_bytes(data[: len(data) * 2 // 3] if truncate else data)
            return [path]
        affine = np.diag([-SPACING[2], -SPACING[1], SPACING[0], 1.0])
        data = voxels.transpose(2, 1, 0)  # (col, row, slice), LPS
        data = data[:, :, 0] if two_d else np.stack([data] * volumes, axis=-1)
        nib.save(nib.Nifti1Image(np.ascontiguousarray(data), affine), path)
        return [path]
    return make


def _dicom(edit: Callable[[object], None] | None = None, count: int = 3):
    """A real 3-slice series as loose ``.dcm`` files; ``edit(dataset)`` changes the middle one."""
    def make(folder: Path, shared: Path) -> list[Path]:
        files = write_dicom_series(stack(_slices(shared, count)), folder / "series")
        if edit is not None:
            import pydicom

            ds = pydicom.dcmread(files[1])
            edit(ds)
            ds.save_as(files[1])
        return files
    return make


def _rt_series(folder: Path, shared: Path) -> list[Path]:
    """A complete MR series (Frame of Reference and all): it gets a DICOM SEG and RTSTRUCT, which carry its tags."""
    import rt_series

    return rt_series.write_mr_series(stack(_slices(shared, 3)), folder / "series")


def _no_pixel_data(ds) -> None:
    del ds.PixelData


def _no_rows(ds) -> None:
    del ds.Rows


def _compressed(syntax: str):
    """Declare ``syntax`` and store encapsulated bytes that are not a valid codestream."""
    def edit(ds) -> None:
        from pydicom.encaps import encapsulate
        from pydicom.uid import UID

        ds.file_meta.TransferSyntaxUID = UID(syntax)
        ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + bytes(200)])
        ds["PixelData"].VR = "OB"
    return edit


def _two_dicom_series(same_uid: bool, second_size: int | None = None):
    """Two series in one folder: new UIDs, or one UID and a second part of another size."""
    def make(folder: Path, shared: Path) -> list[Path]:
        from pydicom.uid import generate_uid

        uid = generate_uid() if same_uid else None
        first = stack(_slices(shared, 2))
        second = stack(kaggle_slices(shared, "volume_266x266", count=2)) if second_size else first
        a = write_dicom_series(first, folder / "series", series_uid=uid)
        b = write_dicom_series(second, folder / "other", series_uid=uid, origin=(0.0, 0.0, 80.0))
        moved = []
        for f in b:  # into one folder, so the CLI sees one upload as well
            moved.append(f.rename(folder / "series" / f"b-{f.name}"))
        shutil.rmtree(folder / "other")
        return a + moved
    return make


def _kaggle_different_sizes(folder: Path, shared: Path) -> list[Path]:
    """Kaggle-named slices with one pixel spacing (1.5 mm) but two sizes."""
    files = kaggle_slices(shared, "volume_360x310", count=1) + kaggle_slices(shared, "volume_234x234", count=1)
    (folder / "scans").mkdir()
    return [Path(shutil.copy(f, folder / "scans" / f.name)) for f in files]


def _jpeg_ls_refusal() -> str:
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEGLSLossless

    if get_decoder(JPEGLSLossless).is_available:  # pylibjpeg or GDCM is installed: the bytes are garbage
        return r"IM\d{4}\.dcm: pixel data could not be decoded \(corrupt or truncated\)"
    return r"IM\d{4}\.dcm is compressed as JPEG-LS Lossless Image Compression, and no decoder for it is installed"


# --------------------------------------------------------------------------- the battery

JPEG_2000, JPEG_LS = "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.80"

SCAN_CASES: list[ScanCase] = [
    # Zips: bombs, unsafe paths, archives inside, nothing inside, damage.
    ScanCase("zip-bomb", _bytes("upl-bomb.zip", lambda _: _deflate_bomb("slice_0001_64_64_1.50_1.50.png", 1100)),
             refuse=r"^upl-bomb\.zip unpacks to over 1024 MB; refusing it\.$"),
    ScanCase("zip-path-traversal", _zip("upl-trav.zip", {"scans/slice_0027_234_234_1.50_1.50.png": _png,
                                                          "../upl-escaped.png": _png}),
             refuse=r"upl-trav\.zip has an unsafe path \(\.\./upl-escaped\.png\)"),
    ScanCase("zip-absolute-path", _zip("upl-abs.zip", {"/tmp/upl-escaped.png": _png}),
             refuse=r"upl-abs\.zip has an unsafe path \(/tmp/upl-escaped\.png\)"),
    ScanCase("zip-nested", _zip("upl-nest.zip", {"scans/inner.zip": _kaggle_zip}),
             refuse=r"upl-nest\.zip contains another archive \(scans/inner\.zip\)"),
    ScanCase("zip-nested-renamed", _zip("upl-nest2.zip", {"scans/slice_0001_64_64_1.50_1.50.png": _kaggle_zip}),
             refuse=r"upl-nest2\.zip contains another archive \(slice_0001_64_64_1\.50_1\.50\.png\)"),
    ScanCase("zip-empty", _zip("upl-empty.zip", {}), refuse=r"^No slice images, NIfTI or DICOM files found"),
    ScanCase("zip-without-images", _zip("upl-docs.zip", {"readme.txt": b"hi", "__MACOSX/._readme.txt": b"x",
                                                         ".DS_Store": b"x"}),
             refuse=r"^No slice images, NIfTI or DICOM files found"),
    ScanCase("zip-damaged-member", _bytes("upl-crc.zip", _damaged_zip),
             refuse=r"upl-crc\.zip is damaged \(slice_0027_234_234_1\.50_1\.50\.png fails its checksum"),
    ScanCase("zip-deflate64", _bytes("upl-d64.zip", _deflate64_zip), refuse=r"upl-d64\.zip uses a compression method"),
    # DICOM.
    ScanCase("dicom-series", _dicom(), shape=(3, 234, 234), note=r"No DICOM SEG or RTSTRUCT: .*frame of reference"),
    ScanCase("dicom-rt-series", _rt_series, shape=(3, 234, 234)),
    ScanCase("dicom-without-pixel-data", _dicom(_no_pixel_data),
             refuse=r"IM\d{4}\.dcm holds no image \(a DICOM without pixel data\)"),
    ScanCase("dicom-without-rows", _dicom(_no_rows), refuse=r"IM\d{4}\.dcm has an incomplete DICOM header"),
    ScanCase("dicom-jpeg-ls-without-codec", _dicom(_compressed(JPEG_LS)), refuse=_jpeg_ls_refusal()),
    ScanCase("dicom-jpeg-2000-corrupt", _dicom(_compressed(JPEG_2000)),
             refuse=r"IM\d{4}\.dcm(: pixel data could not be decoded|.* no decoder for it is installed)"),
    ScanCase("dicom-two-series", _two_dicom_series(same_uid=False),
             refuse=r"^The files belong to 2 different DICOM series"),
    ScanCase("dicom-different-sizes", _two_dicom_series(same_uid=True, second_size=266),
             refuse=r"^The DICOM slices have different sizes"),
    # Kaggle slice files.
    ScanCase("slices-different-sizes", _kaggle_different_sizes,
             refuse=r"slice_0027_234_234_1\.50_1\.50\.png is 234×234 px but the first slice is 360×310"),
    # NIfTI: 4-D is refused unless it holds one volume; 2-D is one slice (docs/scan.md).
    ScanCase("nifti-4d", _nifti("upl-4d.nii", volumes=2),
             refuse=r"upl-4d\.nii holds 2 volumes \(shape \(234, 234, 3, 2\)\); save the one to segment"),
    ScanCase("nifti-4d-one-volume", _nifti("upl-4d1.nii.gz", volumes=1), shape=(3, 234, 234)),
    ScanCase("nifti-2d", _nifti("upl-2d.nii", two_d=True), shape=(1, 234, 234), note=r"A 2-D NIfTI: read as a scan of one slice"),
    # A blank volume is refused, as a blank slice is (the model would answer "no organs" to nothing).
    ScanCase("slices-blank", _zip("upl-black.zip", {f"scans/slice_000{n}_64_64_1.50_1.50.png": _black_png for n in (1, 2, 3)}),
             refuse=r"^Every voxel of the scan has the same intensity; there is nothing to segment\.$"),
    ScanCase("nifti-flat", _nifti("upl-flat.nii.gz", blank=0.0),
             refuse=r"^Every voxel of upl-flat\.nii\.gz has the same intensity; there is nothing to segment\.$"),
    ScanCase("nifti-all-nan", _nifti("upl-nan.nii.gz", blank=np.nan),
             refuse=r"^upl-nan\.nii\.gz has no finite voxel values \(all NaN or infinite\); there is nothing to segment\.$"),
    ScanCase("nifti-nan-outside", _nifti("upl-nanout.nii.gz", nan_outside=True), shape=(3, 234, 234)),
    ScanCase("nifti-truncated", _nifti("upl-cut.nii.gz", truncate=True),
             refuse=r"upl-cut\.nii\.gz could not be decoded; the file looks truncated or corrupt"),
    # Wrong extensions: the content decides.
    ScanCase("zip-named-nii", _bytes("upl-zip.nii", _kaggle_zip), shape=(3, 234, 234)),
    ScanCase("nifti-named-zip", lambda folder, shared: [_nifti("upl-nii.nii.gz")(folder, shared)[0].rename(folder / "upl-nii.zip")],
             shape=(3, 234, 234)),
    ScanCase("nifti-gz-named-gz", lambda folder, shared: [_nifti("upl-gz.nii.gz")(folder, shared)[0].rename(folder / "upl-gz.gz")],
             shape=(3, 234, 234)),
]


def good_scan(folder: Path, shared: Path) -> list[Path]:
    """A small valid upload (2 Kaggle slices), for "does the server still answer" checks."""
    return _slices(shared, 2)


def gunzipped(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
