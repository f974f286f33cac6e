"""Whole scans: read a stack of axial slices from Kaggle slice files, a zip, NIfTI or DICOM.

Every reader returns a :class:`Scan` whose voxels are ``(D, H, W)``: slices from inferior to
superior where the file says so, each slice shown as a radiologist views an axial image
(anterior at the top, the patient's right on the left of the image). ``Scan.affine`` maps
voxel indices ``(col, row, slice, 1)`` to RAS+ millimetres, the NIfTI convention, so a label
volume written with it (:func:`model.volume.save_label_nifti`) opens aligned in 3D Slicer
and ITK-SNAP.

Patient privacy: the DICOM reader looks only at geometry and pixel tags. Nothing here puts
a DICOM tag value into a message, a log line or an output file.
"""

from __future__ import annotations

import contextlib
import gzip
import re
import stat
import tempfile
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from .labels import ORGANS
from .image import ImageError, normalize_intensity, parse_kaggle_name, read_slice
from .samples import IMAGE_SUFFIXES

#: The dataset's slice thickness, used for Kaggle slice files unless the user gives one.
KAGGLE_SLICE_THICKNESS_MM = 3.0
#: Spacing assumed for images that carry none (not Kaggle-named): the dataset's usual values.
ASSUMED_PIXEL_SPACING_MM = 1.5
#: Largest scan we read (voxels); 256 × 512 × 512. The biggest Kaggle scan is 144 × 360 × 310.
MAX_VOXELS = 256 * 512 * 512
MAX_SLICES = 1000
#: Zip limits (bombs, slow uploads): members, and bytes once uncompressed, counted while extracting.
MAX_ZIP_MEMBERS = 2000
MAX_ZIP_BYTES = 1 << 30

NIFTI_SUFFIXES = (".nii", ".nii.gz")
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a local file header; an empty zip's end record
_CASE_DAY = re.compile(r"case\d+_day\d+")
#: Files a zip or folder may hold besides the scan; ignored rather than refused.
_JUNK = re.compile(r"(^|/)(__MACOSX/|\._|\.DS_Store$|Thumbs\.db$|desktop\.ini$|DICOMDIR$)|\.(txt|md|json|csv|xml)$", re.I)


class ScanError(ImageError):
    """A scan that cannot be read. ``str(err)`` is one line a person can act on."""


@dataclass
class Scan:
    """One axial scan.

    ``voxels``: ``(D, H, W)`` raw intensities (the file's dtype, or float32 after rescaling).
    ``spacing_mm``: ``(slice, row, col)`` voxel size. ``affine``: ``(4, 4)`` from
    ``(col, row, slice, 1)`` to RAS+ mm. ``slice_numbers``: the Kaggle slice numbers, or
    1..D for other inputs. ``case_day``: e.g. ``"case123_day20"`` when a path names it.
    ``notes``: one-line caveats for the user (assumed spacing, gaps, fallbacks).
    """

    voxels: np.ndarray
    spacing_mm: tuple[float, float, float]
    affine: np.ndarray
    slice_numbers: tuple[int, ...]
    name: str
    kind: str  # "slices", "nifti" or "dicom"
    case_day: str | None = None
    kaggle_named: bool = False
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        # The name becomes output file names: keep it to safe characters.
        self.name = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.name).strip("._-") or "scan"
        if self.voxels.ndim != 3 or len(self.slice_numbers) != self.voxels.shape[0]:
            raise ValueError(f"voxels must be (D, H, W) with one slice number per slice, got {self.voxels.shape}")

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.voxels.shape)  # type: ignore[return-value]

    def slice_label(self, index: int) -> str:
        return f"slice {self.slice_numbers[index]:04d}" if self.kaggle_named else f"slice {index + 1} of {len(self)}"

    def display_slice(self, index: int) -> np.ndarray:
        """Slice ``index`` stretched for display, ``(H, W) uint8`` (the model's own intensity step)."""
        return normalize_intensity(self.voxels[index])

    def __len__(self) -> int:
        return self.voxels.shape[0]

    def describe(self) -> str:
        d, h, w = self.shape
        s, r, c = self.spacing_mm
        return f"{self.name}: {d} slices of {w}×{h} px, voxel {c:g} × {r:g} × {s:g} mm ({self.kind})"


# --------------------------------------------------------------------------- entry point


def load_scan(paths: str | Path | Iterable[str | Path], slice_thickness_mm: float | None = None) -> Scan:
    """Read one scan from uploaded files: slice images, a zip, one NIfTI, or DICOM files.

    ``paths`` may also be one folder (the command line). ``slice_thickness_mm`` overrides the
    slice spacing of Kaggle slice files (default 3 mm); NIfTI and DICOM carry their own.
    Raises :class:`ScanError` with a one-line reason.
    """
    paths = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    if not paths:
        raise ScanError("No files: upload slice images, a .zip, a NIfTI file or a DICOM series.")
    if len(paths) == 1 and paths[0].is_dir():
        return _load_files(_folder_files(paths[0]), paths[0].name, slice_thickness_mm, paths[0].parent)
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise ScanError(f"File not found: {missing[0]}.")
    zips = [p for p in paths if _kind(p) == "zip"]
    if zips:
        if len(paths) > 1:
            raise ScanError("Upload either one .zip or loose files, not both (or several zips).")
        with tempfile.TemporaryDirectory(prefix="uwmgi-scan-") as tmp:
            files = extract_zip(zips[0], Path(tmp))
            return _load_files(files, _stem(zips[0]), slice_thickness_mm, Path(tmp), zips[0].name)
    files = [p for p in paths if not _JUNK.search(p.as_posix())]
    # Uploads each sit in their own temporary folder, so only a shared folder is a meaningful name.
    parents = {p.parent for p in paths}
    name = _stem(paths[0]) if len(paths) == 1 else parents.pop().name if len(parents) == 1 else "scan"
    return _load_files(files, name, slice_thickness_mm, None)


def _load_files(files: list[Path], name: str, slice_thickness_mm: float | None,
                root: Path | None, container: str = "") -> Scan:
    kinds = {p: _kind(p) for p in files}
    unknown = [p.name for p, k in kinds.items() if k is None]
    if unknown:
        raise ScanError(f"{unknown[0]} is not a slice image, NIfTI or DICOM file.")
    archives = [p.name for p, k in kinds.items() if k == "zip"]
    if archives:
        raise ScanError(f"{container or name} contains another archive ({archives[0]}); upload a flat zip or folder.")
    found = set(kinds.values())
    if not found:
        raise ScanError("No slice images, NIfTI or DICOM files found in the upload.")
    if len(found) > 1:
        raise ScanError(f"The upload mixes {' and '.join(sorted(found))} files; upload one scan of one kind.")
    kind = found.pop()
    if kind == "nifti":
        if len(files) > 1:
            raise ScanError("Upload one NIfTI file per scan.")
        scan = read_nifti(files[0])
    elif kind == "dicom":
        scan = read_dicom_series(files, name)
    else:
        scan = read_slice_files(files, name, slice_thickness_mm, root, container)
    return scan


def _kind(path: Path) -> str | None:
    """``"zip"``, ``"nifti"``, ``"dicom"`` or ``"slices"``: by content where it is unambiguous, else by name.

    Content wins so that a renamed download (a zip saved as ``.nii``, a ``.nii.gz`` saved as
    ``.gz`` or ``.zip``) is still read; slice images are left to their decoder.
    """
    sniffed = _sniff(path)
    if sniffed:
        return sniffed
    lower = path.name.lower()
    if lower.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return "slices"
    if path.suffix.lower() == ".dcm":
        return "dicom"
    if path.suffix.lower() == ".zip":
        return "zip"
    return None


def _sniff(path: Path) -> str | None:
    """What the first bytes say: ``"zip"``, ``"nifti"`` (plain or gzipped), ``"dicom"``, or ``None``."""
    head = _head(path)
    if head[:4] in _ZIP_MAGIC:
        return "zip"
    if head[:2] == b"\x1f\x8b":  # gzip: a .nii.gz, or something else
        head = _head(path, gzip.open)
    if _is_nifti_header(head):
        return "nifti"
    if head[128:132] == b"DICM":
        return "dicom"
    return None


def _head(path: Path, opener=open, size: int = 352) -> bytes:
    try:
        with opener(path, "rb") as fh:
            return fh.read(size)
    except (OSError, EOFError, zlib.error):
        return b""


def _is_nifti_header(head: bytes) -> bool:
    return head[344:348] in (b"n+1\0", b"ni1\0") or head[4:8] in (b"n+2\0", b"ni2\0")


def _folder_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not _JUNK.search(p.relative_to(folder).as_posix()))
    if len(files) > MAX_ZIP_MEMBERS:
        raise ScanError(f"{folder.name} holds {len(files)} files, over the {MAX_ZIP_MEMBERS}-file limit.")
    return files


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii", ".zip", ".dcm", *IMAGE_SUFFIXES):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


# --------------------------------------------------------------------------- zip


def extract_zip(zip_path: Path, dst: Path, max_members: int = MAX_ZIP_MEMBERS,
                max_bytes: int = MAX_ZIP_BYTES) -> list[Path]:
    """Extract a zip's scan files under ``dst``, refusing unsafe archives.

    Refused: absolute or ``..`` member paths, links, encrypted members, nested zips, more
    than ``max_members`` members, and more than ``max_bytes`` uncompressed: by the declared
    sizes before anything is written, and counted again while extracting. Damaged members
    (bad CRC, truncated data, an unsupported compression method) are refused too. Junk
    (``__MACOSX/``, ``.DS_Store``, text files) is skipped. Returns the extracted files,
    sorted by member name.
    """
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        raise ScanError(f"{zip_path.name} is not a readable zip file.") from None
    with archive:
        members = [m for m in archive.infolist() if not m.is_dir()]
        if len(members) > max_members:
            raise ScanError(f"{zip_path.name} has {len(members)} files, over the {max_members}-file limit.")
        if sum(m.file_size for m in members) > max_bytes:
            raise ScanError(f"{zip_path.name} unpacks to over {max_bytes >> 20} MB; refusing it.")
        files, total = [], 0
        for member in sorted(members, key=lambda m: m.filename):
            name = member.filename.replace("\\", "/")
            parts = PurePosixPath(name).parts
            if name.startswith("/") or ".." in parts or (parts and parts[0].endswith(":")):
                raise ScanError(f"{zip_path.name} has an unsafe path ({name}); refusing to extract it.")
            if stat.S_ISLNK(member.external_attr >> 16):
                raise ScanError(f"{zip_path.name} contains a link ({name}); refusing to extract it.")
            if member.flag_bits & 0x1:
                raise ScanError(f"{zip_path.name} is encrypted; upload an unencrypted zip.")
            if _JUNK.search(name):
                continue
            if name.lower().endswith((".zip", ".gz", ".tar", ".tgz", ".7z", ".rar")) and not name.lower().endswith(".nii.gz"):
                raise ScanError(f"{zip_path.name} contains another archive ({name}); upload a flat zip.")
            target = dst.joinpath(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with archive.open(member) as src, open(target, "wb") as out:
                    while block := src.read(1 << 20):
                        # zipfile stops at the declared size, so this only counts again what was declared.
                        total += len(block)
                        if total > max_bytes:
                            raise ScanError(f"{zip_path.name} unpacks to over {max_bytes >> 20} MB; refusing it.")
                        out.write(block)
            except NotImplementedError:  # e.g. Deflate64, which Windows writes for big folders
                raise ScanError(f"{zip_path.name} uses a compression method Python cannot read ({name}); "
                                "zip it again with standard Deflate.") from None
            except (zipfile.BadZipFile, zlib.error, EOFError):
                raise ScanError(f"{zip_path.name} is damaged ({name} fails its checksum or is cut short); "
                                "upload it again.") from None
            files.append(target)
    return files


# --------------------------------------------------------------------------- Kaggle slice files


def read_slice_files(files: list[Path], name: str, slice_thickness_mm: float | None = None,
                     root: Path | None = None, container: str = "") -> Scan:
    """Stack slice images into a scan.

    Kaggle names (``slice_NNNN_W_H_PW_PH.png``) give the order and the pixel spacing; other
    names are ordered naturally with 1.5 mm pixels assumed. Slices are stacked as given: gaps
    in the numbering are reported, not filled. The Kaggle PNGs carry no orientation, so the
    affine assumes the usual axial view and slice numbers increasing towards the head.
    """
    if len(files) > MAX_SLICES:
        raise ScanError(f"{len(files)} slices is over the {MAX_SLICES}-slice limit.")
    parsed = [parse_kaggle_name(p) for p in files]
    notes: list[str] = []
    kaggle = all(parsed)
    if kaggle:
        order = sorted(range(len(files)), key=lambda i: parsed[i].slice_number)
        numbers = [parsed[i].slice_number for i in order]
        if len(set(numbers)) != len(numbers):
            dup = next(n for n in numbers if numbers.count(n) > 1)
            raise ScanError(f"Slice number {dup} appears twice; upload one scan at a time.")
        spacings = {parsed[i].pixel_spacing_mm for i in order}
        if len(spacings) > 1:
            raise ScanError("The slice names give different pixel spacings; upload one scan at a time.")
        row_mm, col_mm = spacings.pop()
        missing = numbers[-1] - numbers[0] + 1 - len(numbers)
        if missing:
            notes.append(f"{missing} slice numbers are missing between {numbers[0]} and {numbers[-1]}; "
                         "slices are stacked as given, so volumes leave out the missing slices.")
    elif any(parsed):
        raise ScanError("Some files have Kaggle slice names and some do not; upload one scan at a time.")
    else:
        order = sorted(range(len(files)), key=lambda i: _natural_key(files[i].name))
        numbers = list(range(1, len(files) + 1))
        row_mm = col_mm = ASSUMED_PIXEL_SPACING_MM
        notes.append(f"Slices ordered by file name; {ASSUMED_PIXEL_SPACING_MM} mm pixels assumed "
                     "(Kaggle names slice_NNNN_W_H_PW_PH.png carry the spacing).")
    if slice_thickness_mm is not None and float(slice_thickness_mm) > 0:
        thickness = float(slice_thickness_mm)
    else:
        thickness = KAGGLE_SLICE_THICKNESS_MM
        notes.append(f"Slice thickness {thickness:g} mm (the dataset's value) assumed; enter another if it differs.")

    slices = []
    for i in order:
        try:
            slices.append(read_slice(files[i], allow_flat=True))
        except ImageError as err:
            raise ScanError(str(err)) from None
        if slices[-1].shape != slices[0].shape:
            h0, w0 = slices[0].shape
            h, w = slices[-1].shape
            raise ScanError(f"{files[i].name} is {w}×{h} px but the first slice is {w0}×{h0}; "
                            "all slices of a scan must have one size.")
        if kaggle:
            p = parsed[i]
            if (p.height, p.width) != slices[-1].shape:
                raise ScanError(f"{files[i].name} is {slices[-1].shape[1]}×{slices[-1].shape[0]} px, "
                                "not the size its name gives.")
    voxels = _stack(slices)
    # Radiological view: columns run towards the patient's left (−x in RAS), rows towards posterior (−y).
    affine = np.diag([-col_mm, -row_mm, thickness, 1.0])
    rel = [(f.relative_to(root) if root else f).as_posix() for f in files]
    case_days = {m[-1] for m in (_CASE_DAY.findall(f"{container}/{r}") for r in rel) if m}
    if len(case_days) > 1:
        raise ScanError(f"The files come from {len(case_days)} different scans (case/day folders); upload one.")
    case_day = case_days.pop() if case_days else (_CASE_DAY.findall(name) or [None])[-1]
    return Scan(voxels, (thickness, row_mm, col_mm), affine, tuple(numbers), case_day or name, "slices",
                case_day=case_day, kaggle_named=kaggle, notes=notes)


def _natural_key(name: str) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _stack(slices: list[np.ndarray]) -> np.ndarray:
    voxels = np.stack(slices)
    if voxels.size > MAX_VOXELS:
        raise ScanError(f"The scan has {voxels.size:,} voxels, over the {MAX_VOXELS:,} limit.")
    if voxels.max() == voxels.min():
        raise ScanError("Every slice has the same flat intensity; there is nothing to segment.")
    return voxels


# --------------------------------------------------------------------------- NIfTI


def read_nifti(path: str | Path) -> Scan:
    """Read a NIfTI volume as axial slices, whatever its stored orientation.

    The image is reoriented (nibabel's orientation tools, no resampling) so that the voxel
    axes point to the patient's left, posterior and superior (LPS): indices ``(col, row,
    slice)`` then give the usual axial view, and the reoriented affine still maps them to
    the same RAS+ positions as the file. Spacing comes from the header.

    A 2-D image is read as a scan of one slice. A 4-D image (time points, echoes, Dixon
    fat/water) is refused unless it holds one volume: which volume the model should see is
    the user's call, and segmenting the first one silently could segment the wrong contrast.
    """
    import nibabel as nib
    from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform

    path = Path(path)
    with contextlib.ExitStack() as stack:
        try:
            img = _open_nifti(path, stack)
            shape = tuple(int(n) for n in img.shape)
        except Exception:  # noqa: BLE001 - nibabel raises many types for bad files
            raise ScanError(f"{path.name} is not a readable NIfTI file.") from None
        while len(shape) > 3 and shape[-1] == 1:  # a 4-D (or 5-D) file holding one volume
            shape = shape[:-1]
        if len(shape) > 3:
            raise ScanError(f"{path.name} holds {int(np.prod(shape[3:]))} volumes (shape {shape}); "
                            "save the one to segment as a 3-D NIfTI.")
        if len(shape) < 2:
            raise ScanError(f"{path.name} has shape {shape}; a scan must be a 3-D volume or one 2-D slice.")
        if int(np.prod(shape)) > MAX_VOXELS:
            raise ScanError(f"{path.name} has {int(np.prod(shape)):,} voxels, over the {MAX_VOXELS:,} limit.")
        notes = []
        try:
            if len(img.shape) > 3:
                img = img.slicer[(slice(None),) * 3 + (0,) * (len(img.shape) - 3)]
            elif len(shape) == 2:
                img = nib.Nifti1Image(np.asanyarray(img.dataobj)[..., None], img.affine, img.header)
                notes.append("A 2-D NIfTI: read as a scan of one slice.")
            stored = "".join(nib.aff2axcodes(img.affine))
            img = img.as_reoriented(ornt_transform(io_orientation(img.affine), axcodes2ornt(("L", "P", "S"))))
            data = np.asanyarray(img.dataobj)
        except Exception:  # noqa: BLE001
            raise ScanError(f"{path.name} could not be decoded; the file looks truncated or corrupt.") from None
    if data.dtype == np.float64:
        data = data.astype(np.float32)
    voxels = np.ascontiguousarray(data.transpose(2, 1, 0))  # (col, row, slice) → (slice, row, col)
    if min(voxels.shape[1:]) < 16:
        raise ScanError(f"{path.name}: axial slices of {voxels.shape[2]}×{voxels.shape[1]} px are too small.")
    col_mm, row_mm, slice_mm = (float(z) for z in img.header.get_zooms()[:3])
    if stored != "LPS":
        notes.append(f"Stored in {stored} orientation; reoriented to axial slices (no resampling).")
    return Scan(voxels, (slice_mm, row_mm, col_mm), img.affine.astype(np.float64), tuple(range(1, len(voxels) + 1)),
                _stem(path), "nifti", case_day=(_CASE_DAY.findall(path.name) or [None])[-1], notes=notes)


def _open_nifti(path: Path, stack: contextlib.ExitStack):
    """The nibabel image of ``path``; its data is read lazily while ``stack`` is open.

    nibabel chooses its reader by file name, so a NIfTI under another name (found by
    :func:`_sniff`) is read from a stream instead, gunzipped when it is gzip.
    """
    import nibabel as nib

    if path.name.lower().endswith(NIFTI_SUFFIXES):
        return nib.load(path)
    stream = stack.enter_context(gzip.open(path, "rb") if _head(path, size=2) == b"\x1f\x8b" else open(path, "rb"))
    head = stream.read(8)
    stream.seek(0)
    return (nib.Nifti2Image if head[4:7] in (b"n+2", b"ni2") else nib.Nifti1Image).from_stream(stream)


# --------------------------------------------------------------------------- DICOM


def read_dicom_series(files: list[Path], name: str = "dicom") -> Scan:
    """Read one single-frame DICOM series as a scan.

    Slices are ordered by ImagePositionPatient projected on the slice normal (the cross
    product of the ImageOrientationPatient cosines), else by InstanceNumber. RescaleSlope and
    RescaleIntercept are applied (pydicom's modality LUT). Spacing: PixelSpacing in-plane,
    the slice positions across (SpacingBetweenSlices or SliceThickness without positions).
    Mixed series, sizes or orientations, malformed geometry tags and compressed pixel data
    without an installed decoder are refused. Messages never quote tag values.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_rescale

    datasets, headers = [], []
    for f in files:
        try:
            ds = pydicom.dcmread(f, force=f.suffix.lower() == ".dcm")
        except (InvalidDicomError, OSError, ValueError, EOFError, AttributeError):
            raise ScanError(f"{f.name} is not a readable DICOM file.") from None
        if "PixelData" not in ds:
            raise ScanError(f"{f.name} holds no image (a DICOM without pixel data).")
        try:
            frames = int(ds.get("NumberOfFrames", 1) or 1)
            header = _slice_header(ds)
        except (AttributeError, TypeError, ValueError):
            raise ScanError(f"{f.name} has an incomplete DICOM header (image size, position or spacing "
                            "missing or malformed).") from None
        if frames > 1:
            raise ScanError(f"{f.name} is a multi-frame DICOM; upload a series of single-slice files.")
        _check_decoder(f, ds)
        datasets.append((f, ds))
        headers.append(header)
    if not datasets:
        raise ScanError("No DICOM files found.")

    series = {str(ds.get("SeriesInstanceUID", "")) for _, ds in datasets}
    if len(series) > 1:
        raise ScanError(f"The files belong to {len(series)} different DICOM series; upload one series at a time.")
    if len({h.size for h in headers}) > 1:
        raise ScanError("The DICOM slices have different sizes; upload one series at a time.")
    have_geometry = all(h.orientation is not None and h.position is not None for h in headers)
    notes: list[str] = []
    if have_geometry:
        iop = np.array([h.orientation for h in headers])
        if not np.allclose(iop, iop[0], atol=1e-4):
            raise ScanError("The DICOM slices have different orientations; upload one series at a time.")
        row_cos, col_cos = iop[0, :3], iop[0, 3:]
        normal = np.cross(row_cos, col_cos)
        positions = np.array([h.position for h in headers])
        along = positions @ normal
        order = np.argsort(along, kind="stable")
        along = along[order]
        if len(along) > 1 and np.min(np.diff(along)) < 1e-3:
            raise ScanError("Two DICOM slices share one position; upload one series at a time.")
    else:
        order = np.argsort([h.instance for h in headers], kind="stable")
        notes.append("DICOM files lack ImagePositionPatient; slices ordered by InstanceNumber.")
    datasets = [datasets[i] for i in order]
    first = headers[order[0]]

    if first.pixel_spacing is not None:
        row_mm, col_mm = first.pixel_spacing
    else:
        row_mm = col_mm = ASSUMED_PIXEL_SPACING_MM
        notes.append(f"No PixelSpacing; {ASSUMED_PIXEL_SPACING_MM} mm pixels assumed.")
    if have_geometry and len(along) > 1:
        gaps = np.diff(along)
        slice_mm = float(np.median(gaps))
        if np.max(np.abs(gaps - slice_mm)) > 0.1 * slice_mm:
            notes.append("Uneven slice spacing; volumes use the median spacing.")
    else:
        slice_mm = first.thickness_mm or KAGGLE_SLICE_THICKNESS_MM

    slices = []
    for f, ds in datasets:
        try:
            pixels = ds.pixel_array
        except Exception:  # noqa: BLE001 - corrupt or truncated data (missing decoders were refused above)
            raise ScanError(f"{f.name}: pixel data could not be decoded (corrupt or truncated); "
                            "export the series uncompressed.") from None
        if pixels.ndim != 2:
            raise ScanError(f"{f.name} is not a greyscale slice.")
        slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
        slices.append(apply_rescale(pixels, ds).astype(np.float32) if (slope, intercept) != (1.0, 0.0) else pixels)
    voxels = _stack(slices)

    if have_geometry:
        origin = positions[order[0]]
        step = (positions[order[-1]] - origin) / (len(order) - 1) if len(order) > 1 else normal * slice_mm
        lps = np.eye(4)
        lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3] = row_cos * col_mm, col_cos * row_mm, step, origin
    else:
        lps = np.diag([col_mm, row_mm, slice_mm, 1.0])
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps  # DICOM's LPS world → NIfTI's RAS world
    return Scan(voxels, (slice_mm, row_mm, col_mm), affine, tuple(range(1, len(voxels) + 1)), name, "dicom",
                notes=notes)


@dataclass(frozen=True)
class _SliceHeader:
    """The tags that place one DICOM slice (geometry only, never a patient tag)."""

    size: tuple[int, int]  # Rows, Columns
    orientation: tuple[float, ...] | None  # ImageOrientationPatient: 6 direction cosines
    position: tuple[float, ...] | None  # ImagePositionPatient: 3 values, mm
    pixel_spacing: tuple[float, ...] | None  # PixelSpacing: row, column mm
    thickness_mm: float | None  # SpacingBetweenSlices, else SliceThickness
    instance: int  # InstanceNumber, 0 when absent


def _slice_header(ds) -> _SliceHeader:
    """Geometry tags of ``ds``; ``AttributeError``/``TypeError``/``ValueError`` when missing or malformed."""
    from pydicom.multival import MultiValue

    def floats(keyword: str, count: int) -> tuple[float, ...] | None:
        value = ds.get(keyword)
        if value is None or value == "":
            return None
        values = tuple(float(v) for v in value) if isinstance(value, (MultiValue, list, tuple)) else (float(value),)
        if len(values) != count or not np.all(np.isfinite(values)) or (keyword == "PixelSpacing" and min(values) <= 0):
            raise ValueError(f"{keyword} needs {count} valid values")
        return values

    thickness = ds.get("SpacingBetweenSlices") or ds.get("SliceThickness")
    thickness_mm = float(thickness) if thickness else None
    return _SliceHeader((int(ds.Rows), int(ds.Columns)), floats("ImageOrientationPatient", 6),
                        floats("ImagePositionPatient", 3), floats("PixelSpacing", 2),
                        thickness_mm if thickness_mm and thickness_mm > 0 else None,
                        int(ds.get("InstanceNumber", 0) or 0))


def _check_decoder(path: Path, ds) -> None:
    """Refuse compressed pixel data that no installed pydicom plugin can decode, naming the codec."""
    from pydicom.pixels import get_decoder

    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is None or not syntax.is_compressed:
        return
    try:
        available = get_decoder(syntax).is_available
    except NotImplementedError:  # a transfer syntax pydicom knows no decoder for
        available = False
    if not available:
        # The transfer syntax's name is a codec, not patient data: safe to show.
        raise ScanError(f"{path.name} is compressed as {syntax.name}, and no decoder for it is installed; "
                        "export the series uncompressed.")


# --------------------------------------------------------------------------- inference


def stack_slices(voxels: np.ndarray, index: int, offsets: Iterable[int]) -> np.ndarray:
    """The 2.5D input stack ``(C, H, W)`` for slice ``index`` of ``voxels`` ``(D, H, W)``; edges clamp."""
    depth = voxels.shape[0]
    return voxels[[min(max(index + o, 0), depth - 1) for o in offsets]]


def segment_scan_steps(segmenter, scan: Scan, organ_masks: np.ndarray, chunk_slices: int | None = None) -> Iterator[int]:
    """Segment ``scan`` into ``organ_masks`` ``(O, D, H, W) bool`` chunk by chunk; yield slices done.

    Each chunk goes through :meth:`Segmenter.predict` (as 2.5D stacks when the checkpoint
    declares ``slice_offsets``, edges clamped), so memory beyond the model stays at one chunk
    of inputs and logits plus the boolean masks (48 MB for 144 × 360 × 310). A caller that
    stops iterating (a cancelled request) stops the work at the next chunk.
    """
    depth = len(scan)
    if organ_masks.shape[1:] != scan.shape:
        raise ValueError(f"organ_masks {organ_masks.shape} does not fit a scan of shape {scan.shape}")
    chunk_slices = chunk_slices or 2 * segmenter.batch_size
    stacked = any(segmenter.slice_offsets)
    for start in range(0, depth, chunk_slices):
        stop = min(start + chunk_slices, depth)
        if stacked:
            inputs = np.stack([stack_slices(scan.voxels, i, segmenter.slice_offsets) for i in range(start, stop)])
        else:
            inputs = scan.voxels[start:stop]
        organ_masks[:, start:stop] = segmenter.predict(inputs).transpose(1, 0, 2, 3)
        yield stop


def segment_scan(segmenter, scan: Scan, progress=None) -> np.ndarray:
    """Organ masks ``(O, D, H, W) bool`` of a whole scan; ``progress(slices_done)`` after each chunk."""
    organ_masks = np.zeros((len(ORGANS), *scan.shape), dtype=bool)
    for done in segment_scan_steps(segmenter, scan, organ_masks):
        if progress is not None:
            progress(done)
    return organ_masks

