"""Whole scans: reading them in every format the app takes, and finding them in a cohort.

:mod:`.base` (the :class:`Scan` type, :class:`ScanError`, limits), :mod:`.kinds` (what a file is),
:mod:`.load` (:func:`load_scan`, the one dispatcher), one reader per format (:mod:`.slices`,
:mod:`.nifti`, :mod:`.dicom`, :mod:`.archive` for zips), :mod:`.sources` (the scans of a
cohort, named before any pixel is read) and :mod:`.kaggle` (the dataset's ``caseN_dayM`` names).
"""

from .base import Scan, ScanError, check_organ_masks
from .load import load_scan

__all__ = ["Scan", "ScanError", "check_organ_masks", "load_scan"]
