"""DICOM SEG and RTSTRUCT for a scan that came from a DICOM series: the one call for the app and CLI.

NIfTI and slice-image inputs carry no DICOM references (UIDs, frame of reference), so these two
files exist only for DICOM series input. Details and the file layout: ``docs/dicom_export.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..planning import Structure, organ_structures
from ..scans.base import Scan, ScanError, check_organ_masks

#: Why a scan from NIfTI or slice images gets no DICOM SEG or RTSTRUCT; one line for the UI.
NOT_DICOM_NOTE = ("DICOM SEG and RTSTRUCT are offered only for DICOM series input: NIfTI and image files "
                  "carry no DICOM references (patient, study, series, frame of reference) to attach them to.")


def write_dicom_outputs(organ_masks: np.ndarray, scan: Scan, out_dir: str | Path,
                        structures: Sequence[Structure] = ()) -> list[Path]:
    """Write ``<scan>_seg.dcm`` and ``<scan>_rtstruct.dcm`` into ``out_dir``; returns their paths.

    ``organ_masks``: ``(O, D, H, W) bool`` on the scan's grid. ``scan``: read from a DICOM series
    (its headers are ``scan.source``). ``structures``: optional planning structures on the same
    grid (:func:`model.planning.planning_structures`), added after the organs. Both files carry
    the source's patient and study identifiers. Raises :class:`ScanError` (one line, no tag
    values) when the series cannot be referenced.
    """
    if scan.kind != "dicom":
        raise ScanError(NOT_DICOM_NOTE)
    source = scan.source
    if source is None:
        raise ScanError("The DICOM series lacks the geometry (position, orientation, pixel spacing) "
                        "that a DICOM SEG or RTSTRUCT must reference.")
    source.check_referenceable()
    check_organ_masks(organ_masks, scan.shape)
    all_structures = [*organ_structures(organ_masks), *structures]
    from .rtstruct import write_rtstruct
    from .seg import write_seg

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seg = write_seg(all_structures, source, out_dir / f"{scan.name}_seg.dcm")
    rtstruct = write_rtstruct(all_structures, source, out_dir / f"{scan.name}_rtstruct.dcm")
    return [seg, rtstruct]
