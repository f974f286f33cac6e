"""DICOM SEG and RTSTRUCT for a scan that came from a DICOM series: the one call for the app and CLI.

NIfTI and slice-image inputs carry no DICOM references (UIDs, frame of reference), so these two
files exist only for DICOM series input. Details and the file layout: ``docs/dicom_export.md``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from .dicom_source import read_source_series
from .planning import Structure, organ_structures
from .scan import ScanError

#: Why a scan from NIfTI or slice images gets no DICOM SEG or RTSTRUCT; one line for the UI.
NOT_DICOM_NOTE = ("DICOM SEG and RTSTRUCT are offered only for DICOM series input: NIfTI and image files "
                  "carry no DICOM references (patient, study, series, frame of reference) to attach them to.")


def write_dicom_outputs(organ_masks: np.ndarray, dicom_files: str | Path | Iterable[str | Path], out_dir: str | Path,
                        structures: Sequence[Structure] = (), name: str = "scan",
                        software_version: str = "") -> list[Path]:
    """Write ``<name>_seg.dcm`` and ``<name>_rtstruct.dcm`` into ``out_dir``; returns their paths.

    ``organ_masks``: ``(O, S, H, W) bool`` in the voxel order of the scan that
    :func:`model.scan.load_scan` read from ``dicom_files`` (files, a folder, or the zip).
    ``structures``: optional planning structures on the same grid
    (:func:`model.planning.planning_structures`), added after the organs. Both files carry the
    source's patient and study identifiers. Raises :class:`ScanError` (one line, no tag values)
    when the series cannot be referenced or does not match the masks.
    """
    source = read_source_series(dicom_files)
    if organ_masks.shape[1:] != source.shape:
        raise ScanError(f"The masks are {organ_masks.shape[1:]} (slices, rows, columns); "
                        f"the DICOM series is {source.shape}.")
    all_structures = [*organ_structures(organ_masks), *structures]
    from .dicom_seg import write_seg
    from .rtstruct import write_rtstruct

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seg = write_seg(all_structures, source, out_dir / f"{name}_seg.dcm", software_version=software_version)
    rtstruct = write_rtstruct(all_structures, source, out_dir / f"{name}_rtstruct.dcm", software_version=software_version)
    return [seg, rtstruct]
