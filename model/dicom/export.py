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


#: Segment Algorithm Type (SEG) and ROI Generation Algorithm (RTSTRUCT) of a structure the model made
#: alone, and of one a person corrected (the model's output edited in this app).
AUTOMATIC, SEMIAUTOMATIC = "AUTOMATIC", "SEMIAUTOMATIC"


def algorithm_types(structures: Sequence[Structure], edited_organs=frozenset()) -> list[str]:
    """:data:`SEMIAUTOMATIC` for each structure made from an organ in ``edited_organs``, else :data:`AUTOMATIC`.

    An organ's PRV comes from the organ, and the bowel bag from both bowels, so an edit of a
    bowel makes the bag (and its PRV) semiautomatic too.
    """
    from .. import labels

    def sources(structure: Structure) -> set[str]:
        if structure.organ is not None:
            return {structure.organ}
        return {"small_bowel", "large_bowel"} if structure.key.startswith("bowel_bag") else set(labels.ORGANS)

    return [SEMIAUTOMATIC if sources(s) & set(edited_organs) else AUTOMATIC for s in structures]


def write_dicom_outputs(organ_masks: np.ndarray, scan: Scan, out_dir: str | Path,
                        structures: Sequence[Structure] = (), edited_organs=frozenset(), traced=None) -> list[Path]:
    """Write ``<scan>_seg.dcm`` and ``<scan>_rtstruct.dcm`` into ``out_dir``; returns their paths.

    ``organ_masks``: ``(O, D, H, W) bool`` on the scan's grid. ``scan``: read from a DICOM series
    (its headers are ``scan.source``). ``structures``: optional planning structures on the same
    grid (:func:`model.planning.planning_structures`), added after the organs. Both files carry
    the source's patient and study identifiers. Raises :class:`ScanError` (one line, no tag
    values) when the series cannot be referenced. Structures made from ``edited_organs`` (organ
    keys corrected by hand) are SEMIAUTOMATIC in both files, the others AUTOMATIC (:func:`algorithm_types`).
    ``traced``: the RTSTRUCT's slices traced before (:class:`model.dicom.rtstruct.TracedSlices`).
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
    kinds = algorithm_types(all_structures, edited_organs)
    seg = write_seg(all_structures, source, out_dir / f"{scan.name}_seg.dcm", algorithm_types=kinds)
    rtstruct = write_rtstruct(all_structures, source, out_dir / f"{scan.name}_rtstruct.dcm", algorithm_types=kinds,
                              traced=traced)
    return [seg, rtstruct]
