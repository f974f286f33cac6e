"""DICOM exchange for radiotherapy: SEG and RTSTRUCT export, clinical contours as ground truth.

:mod:`.codes` (UIDs, SNOMED codes both ways, who made the files), :mod:`.seg` (highdicom),
:mod:`.rtstruct` (pydicom), :mod:`.export` (the one call for the app and CLI), :mod:`.truth`
(an RTSTRUCT or SEG read back as ground truth). Reading the source series is the scan reader's
job (:mod:`model.scans.dicom`). Nothing is imported here, so the slice tab never loads highdicom.
"""
