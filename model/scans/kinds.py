"""What kind of scan file a path is, with one precedence everywhere: the content, then the name.

Content wins so that a renamed download (a zip saved as ``.nii``, a ``.nii.gz`` saved as ``.gz``
or ``.zip``, a DICOM file without ``.dcm``) is still read; slice images, which have no single
magic number, are left to their names and their decoder.
"""

from __future__ import annotations

import gzip
from pathlib import Path

from ..image import IMAGE_SUFFIXES
from .base import NIFTI_SUFFIXES, file_head

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a local file header; an empty zip's end record


def kind_of(path: Path) -> str | None:
    """``"zip"``, ``"nifti"``, ``"dicom"``, ``"slices"`` or ``None``: by content where it is unambiguous, else by name."""
    return sniff_kind(path) or kind_by_name(path)


def kind_by_name(path: Path) -> str | None:
    """What a file's name says it is: ``"nifti"``, ``"slices"``, ``"dicom"``, ``"zip"`` or ``None``.

    Reads nothing: for planning from paths alone (a file may not exist yet). Where the file can
    be read, :func:`kind_of` decides.
    """
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


def sniff_kind(path: Path) -> str | None:
    """What the first bytes say: ``"zip"``, ``"nifti"`` (plain or gzipped), ``"dicom"``, or ``None``."""
    head = file_head(path)
    if head[:4] in _ZIP_MAGIC:
        return "zip"
    if head[:2] == b"\x1f\x8b":  # gzip: a .nii.gz, or something else
        head = file_head(path, gzip.open)
    if _is_nifti_header(head):
        return "nifti"
    if is_dicom_head(head):
        return "dicom"
    return None


def is_dicom_head(head: bytes) -> bool:
    """Whether a file's first bytes carry the DICOM Part 10 marker (``DICM`` after the 128-byte preamble)."""
    return head[128:132] == b"DICM"


def _is_nifti_header(head: bytes) -> bool:
    return head[344:348] in (b"n+1\0", b"ni1\0") or head[4:8] in (b"n+2\0", b"ni2\0")
