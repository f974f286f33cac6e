"""The Kaggle dataset's case and day names (``case123_day20``): the one place that parses them.

A scan of the UW-Madison GI Tract data is named ``caseN_dayM``: ``caseN`` is the patient (the
unit of a cross-validation split, and of a course of treatment), ``dayM`` the day of the scan.
Its slices sit in ``train/caseN/caseN_dayM/scans/`` as ``slice_NNNN_W_H_PW_PH.png``
(:func:`model.image.parse_kaggle_name` reads those file names). Imports nothing of the package,
so every reader and every caller outside it may use it.
"""

from __future__ import annotations

import re
from pathlib import Path

#: A case and day as a regular expression, for patterns that embed it (the slice ids of :mod:`model.rle`).
CASE_DAY_PATTERN = r"case\d+_day\d+"
_CASE_DAY = re.compile(CASE_DAY_PATTERN)
_CASE_DAY_PARTS = re.compile(r"^(case\d+)_day(\d+)$")


def case_day_in(*texts: str) -> str | None:
    """The innermost Kaggle ``caseN_dayM`` in the texts (paths), searched last to first; ``None`` if none."""
    for text in reversed(texts):
        found = _CASE_DAY.findall(text)
        if found:
            return found[-1]
    return None


def case_and_day(case_day: str) -> tuple[str, int]:
    """``"case122_day18"`` → ``("case122", 18)``; ``ValueError`` for anything else."""
    match = _CASE_DAY_PARTS.match(case_day)
    if match is None:
        raise ValueError(f"not a case-day like 'case123_day20': {case_day!r}")
    return match[1], int(match[2])


def case_of(case_day: str) -> str:
    """``"case123_day20"`` → ``"case123"`` (the patient)."""
    return case_and_day(case_day)[0]


def day_of(case_day: str) -> str:
    """``"case123_day20"`` → ``"day20"`` (the day, as the course report labels it)."""
    return case_day[len(case_of(case_day)) + 1:]


def scan_folders(data_dir: str | Path) -> dict[str, Path]:
    """The scans of a Kaggle download: ``{case_day: DATA_DIR/train/caseN/caseN_dayM/scans}``, by case-day."""
    root = Path(data_dir) / "train"
    return {folder.parent.name: folder for folder in sorted(root.glob("case*/case*_day*/scans"))}


def scan_folder(case_day: str) -> str:
    """Where the Kaggle layout keeps a scan's slices: ``train/caseN/caseN_dayM/scans``."""
    return f"train/{case_of(case_day)}/{case_day}/scans"
