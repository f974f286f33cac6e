"""Finding the scans in command-line inputs, and naming each one before any pixel is read.

An input is a scan (a NIfTI file, a zip, a folder of slices or DICOM files, or loose files,
grouped by the folder they sit in), or a folder of many scans, such as a Kaggle download:
``ROOT/train/caseN/caseN_dayM/scans/slice_*.png``. A folder that holds slice or DICOM files
itself is one scan; other folders are searched below them. Names come from the paths alone, so
a cohort can be planned, checked for clashes and resumed without decoding anything.
"""

from __future__ import annotations

import os
import zipfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from .base import JUNK, Scan, ScanError, natural_key, safe_name, scan_stem
from .kaggle import case_day_in
from .kinds import kind_by_name, kind_of
from .load import load_scan


class NameClashError(ScanError):
    """Two inputs that would write the same outputs. ``str(err)`` is one line."""


@dataclass(frozen=True)
class ScanSource:
    """One scan to read: what :func:`model.scans.load_scan` takes, and the name its outputs get.

    ``paths``: one folder or file, or the loose files of one folder. ``name``: the output file
    stem, unique among the sources of one run. ``label``: the input as the user gave it, for
    messages and for recognising a scan finished in an earlier run.
    """

    paths: tuple[Path, ...]
    name: str
    case_day: str | None
    label: str

    @property
    def key(self) -> str:
        """The input's absolute path (a loose group: its folder), recorded to recognise it in a later run."""
        path = self.paths[0]
        return (path.parent.absolute().as_posix() + "/*") if len(self.paths) > 1 else path.absolute().as_posix()

    def load(self, slice_thickness_mm: float | None = None) -> Scan:
        """Read the scan (:class:`ScanError` if it cannot be read), named as planned."""
        scan = load_scan(self.paths[0] if len(self.paths) == 1 else list(self.paths), slice_thickness_mm)
        scan.name = self.name
        return scan

    def estimated_slices(self) -> int:
        """The slice count as cheaply as it can be known (files, or a NIfTI header); 0 when unknown."""
        path = self.paths[0]
        try:
            if len(self.paths) > 1:
                return len(self.paths)
            if path.is_dir():
                return sum(1 for p in path.rglob("*") if p.is_file() and not JUNK.search(p.name))
            if kind_by_name(path) == "nifti":
                import nibabel as nib

                shape = nib.load(path).shape
                return int(shape[2]) if len(shape) > 2 else 1
            if kind_by_name(path) == "zip":
                with zipfile.ZipFile(path) as archive:
                    return sum(1 for m in archive.infolist() if not m.is_dir() and not JUNK.search(m.filename))
            return 1
        except Exception:  # noqa: BLE001 - only an estimate: the reader reports what is wrong
            return 0


def find_scans(inputs: list[str | Path]) -> list[ScanSource]:
    """Every scan in ``inputs``, in the order given (folders: natural order of their paths), uniquely named.

    Raises :class:`NameClashError` when two inputs name the same case and day (their outputs
    and submission ids would clash); other equal names get ``-2``, ``-3``, ... in input order.
    """
    found: list[tuple[tuple[Path, ...], str]] = []
    loose: dict[Path, list[Path]] = defaultdict(list)
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            found.extend(((p,), p.as_posix()) for p in _walk(path))
        elif kind_by_name(path) in ("nifti", "zip") or not path.exists():
            found.append(((path,), str(raw)))
        else:
            loose[path.parent].append(path)
    found.extend((tuple(files), files[0].parent.as_posix() if len(files) > 1 else files[0].as_posix())
                 for files in loose.values())
    return _unique([ScanSource(paths, *_name(paths), label) for paths, label in found])


def _walk(root: Path) -> list[Path]:
    """Scans under ``root``: folders holding slice or DICOM files (read whole), NIfTI files and zips."""
    scans = []
    for folder, dirs, files in os.walk(root):
        folder_path = Path(folder)
        dirs.sort(key=natural_key)
        kept = [folder_path / f for f in sorted(files, key=natural_key)
                if not JUNK.search((folder_path / f).relative_to(root).as_posix())]
        kinds = {f: kind_of(f) for f in kept}
        if any(k in ("slices", "dicom") for k in kinds.values()):
            scans.append(folder_path)  # one scan: its reader takes the whole folder
            dirs.clear()
            continue
        scans.extend(f for f, k in kinds.items() if k in ("nifti", "zip"))
    return scans


def _name(paths: tuple[Path, ...]) -> tuple[str, str | None]:
    """``(name, case_day)`` from the paths: the case and day wherever they hold one, else the file or folder."""
    path = paths[0]
    where = (path.parent if len(paths) > 1 else path).absolute().as_posix()
    case_day = case_day_in(where)
    if case_day is None and kind_by_name(path) == "zip" and path.is_file():
        try:
            with zipfile.ZipFile(path) as archive:
                days = {case_day_in(m) for m in archive.namelist()} - {None}
            case_day = days.pop() if len(days) == 1 else None
        except (zipfile.BadZipFile, OSError):
            pass
    if case_day:
        return case_day, case_day
    if len(paths) > 1:
        return safe_name(path.parent.name), None
    return safe_name(path.name if path.is_dir() else scan_stem(path)), None


def _unique(sources: list[ScanSource]) -> list[ScanSource]:
    by_name: dict[str, list[ScanSource]] = defaultdict(list)
    for source in sources:
        by_name[source.name].append(source)
    for name, same in by_name.items():
        if len(same) > 1 and same[0].case_day:
            raise NameClashError(f"{name} is named by {len(same)} inputs ({same[0].label} and {same[1].label}); "
                                 "give each case and day once.")
    taken = set(by_name)
    result = []
    seen: set[str] = set()
    for source in sources:
        name = source.name
        if name in seen:
            n = 2
            while f"{source.name}-{n}" in taken:
                n += 1
            name = f"{source.name}-{n}"
            taken.add(name)
            source = ScanSource(source.paths, name, source.case_day, source.label)
        seen.add(name)
        result.append(source)
    return result
