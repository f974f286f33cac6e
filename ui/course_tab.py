"""The Course tab: day A (the reference), day B and further days against a target on day A.

Without a target it compares day A with day B as before (:func:`ui.days_tab.compare_days_files`). With a
target (an RTSTRUCT ROI or DICOM SEG segment picked by name, or a label NIfTI on A's grid), optionally
an RTDOSE on day A and dose constraints, it runs :func:`model.course_report.course_of_scans`: the course
table, a plot per organ, day A and the last day with the target and its rings drawn, and the course's files.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import numpy as np
from skimage.segmentation import find_boundaries

from model import labels
from model.course import Course
from model.course_report import course_of_scans, course_settings, day_masks, read_day_files, target_and_dose
from model.days import RESULT_SUFFIXES
from model.scans.kaggle import case_of

from . import days_tab, server
from .tables import course_table, ring_label

#: The label NIfTI choice of the ROI picker that takes every labelled voxel.
ALL_LABELS = "all labelled voxels"
#: Contour colours of the picture: the target, then the outer edge of each ring.
TARGET_RGB = (255, 0, 255)
RING_RGB = ((255, 255, 0), (255, 160, 0))
DAY_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def structure_names(path: str | Path | None) -> list[str]:
    """The structures a target file offers: an RTSTRUCT's ROI names, a DICOM SEG's segment labels, or a
    label NIfTI's ids (after :data:`ALL_LABELS`); ``[]`` for no file or one that is none of these."""
    if not path:
        return []
    path = Path(path)
    from model.scans.kinds import kind_of

    try:
        kind = kind_of(path)
    except Exception:  # noqa: BLE001 - an unreadable file offers no names; the run says why
        return []
    if kind == "dicom":
        import pydicom

        try:
            header = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        except Exception:  # noqa: BLE001
            return []
        names = [str(roi.get("ROIName", "")) for roi in header.get("StructureSetROISequence", [])]
        names += [str(seg.get("SegmentLabel", "")) for seg in header.get("SegmentSequence", [])]
        return [n for n in names if n]
    if kind == "nifti":
        import nibabel as nib

        try:
            ids = np.unique(np.rint(np.asanyarray(nib.load(path).dataobj)).astype(np.int64))
        except Exception:  # noqa: BLE001
            return []
        return [ALL_LABELS, *(str(i) for i in ids if i != 0)]
    return []


def roi_choices(target_file) -> gr.Dropdown:
    """The ROI picker filled from the uploaded target file, its first structure chosen."""
    paths = server.upload_paths(target_file)
    names = structure_names(paths[0] if paths else None)
    return gr.Dropdown(choices=names, value=names[0] if names else None)


def no_course() -> tuple:
    """The course table and plots when no course was run: empty (after Compare days, the last course's are gone)."""
    return course_table(None), []


def course_files(files_a, files_b, more_days=None, target_file=None, roi=None, dose_file=None, constraints_text=None):
    """The tab's outputs: note, A-vs-B table, picture, downloads, course table and plots. Everything after the
    two days is optional, as in the page (the API lists these as optional)."""
    if not server.upload_paths(target_file):
        note, rows, picture, downloads = days_tab.compare_days_files(files_a, files_b)
        if server.upload_paths(more_days) or server.upload_paths(dose_file) or (constraints_text or "").strip():
            note += "\n\nFurther days, a dose and constraints are used only in a course: upload a target on day A."
        return note, rows, picture, downloads, *no_course()
    with server.user_errors("running the course", "This course could not be computed; try other days or another target."):
        return run_course(files_a, files_b, more_days, target_file, roi, dose_file, constraints_text)


def run_course(files_a, files_b, more_days, target_file, roi, dose_file, constraints_text):
    more = further_days(server.upload_paths(more_days))
    if len(more) > len(DAY_LETTERS) - 2:
        raise server.user_error(f"At most {len(DAY_LETTERS) - 2} further days, one file each; got {len(more)}.")
    constraints = [line.strip() for line in (constraints_text or "").splitlines() if line.strip()]
    dose_paths = server.upload_paths(dose_file)
    try:
        settings = course_settings(constraints, with_dose=bool(dose_paths), dose_hint="upload an RTDOSE on day A")
    except ValueError as err:
        raise server.user_error(str(err)) from None
    # Every day is read and the target and dose checked before the model runs on any day.
    uploads = [server.upload_paths(files_a), server.upload_paths(files_b), *more]
    read = [(DAY_LETTERS[i], *read_day_files(DAY_LETTERS[i], paths)) for i, paths in enumerate(uploads)]
    reference = read[0][1]
    target_path = server.upload_paths(target_file)[0]
    spec = target_path if not roi or roi == ALL_LABELS else f"{target_path}:{roi}"
    try:
        target, dose, notes = target_and_dose(spec, dose_paths[0] if dose_paths else None, reference)
    except ValueError as err:
        raise server.user_error(str(err)) from None
    days = [(label, scan, day_masks(scan, results, server.MODEL.get)) for label, scan, results in read]
    names = [scan.name for _, scan, _ in days]
    scan_names = {label: scan.name if names.count(scan.name) == 1 else f"{label}_{scan.name}" for label, scan, _ in days}
    cases = {case_of(scan.case_day) for _, scan, _ in days if scan.case_day}
    case = cases.pop() if len(cases) == 1 else "course"
    result, files, course_notes = course_of_scans(days, target, dose, settings, server.scratch_dir(), case, scan_names)
    last = result.days[-1].label
    note = "\n\n".join(dict.fromkeys([
        *course_notes,  # a failing day first
        " ".join(f"**{label}** {scan.describe()}." for label, scan, _ in days),
        "Day A is the reference. The target and dose are carried onto each day by its rigid registration to A: "
        "the \"plan not adapted, today's anatomy\" estimate, with the dose not recomputed. Research use only.",
        f"Picture: day A and day {last} at the slice with most target; magenta the target, yellow and orange "
        f"the outer edges of the rings {', '.join(ring_label(n) for n in settings.ring_names)}; organ "
        "contours in their colours.",
        *notes, *(n for _, scan, _ in days for n in scan.notes),
    ]))
    plots = [str(p) for p in files if p.suffix == ".png"]
    masks = {label: m for label, _, m in days}
    return (note, [], course_picture(result, masks), [str(p) for p in files], course_table(result, case), plots)


def further_days(paths: list[str]) -> list[list[str]]:
    """The further days' uploads, one list per day in upload order: each scan file (a .zip or a NIfTI) with
    the earlier result named after it (``X.zip`` with ``X_masks.zip`` or ``X_labels.nii.gz``), if any."""
    def stem(name: str) -> str:
        for suffix in (".nii.gz", ".nii", ".zip"):
            if name.lower().endswith(suffix):
                return name[:-len(suffix)]
        return name

    results = [p for p in paths if Path(p).name.lower().endswith(RESULT_SUFFIXES)]
    days = [(stem(Path(p).name), [p]) for p in paths if p not in results]
    for path in results:
        name = Path(path).name
        scan = name[:-len(next(s for s in RESULT_SUFFIXES if name.lower().endswith(s)))]
        day = next((files for day_stem, files in days if day_stem == scan and len(files) == 1), None)
        if day is None:
            raise server.user_error(f"Further days: {name} is named after no uploaded day ({scan}.zip or "
                                    f"{scan}.nii.gz); upload each day as one file, with its result named after it.")
        day.append(path)
    return [files for _, files in days]


def course_picture(result: Course, masks: dict[str, np.ndarray]) -> np.ndarray:
    """``(H, W_A + W_N, 3) uint8``: day A and the last day, each at its slice with most mapped target,
    with the organs' contours, the target's (magenta) and the rings' outer edges."""
    panels = []
    for day in (result.days[0], result.days[-1]):
        index = int(np.argmax(day.target.sum(axis=(1, 2))))
        grey = day.scan.display_slice(index)
        rgb = np.repeat(grey[..., None], 3, axis=2)
        for o, organ in enumerate(labels.ORGANS):
            rgb[find_boundaries(masks[day.label][o, index], mode="inner")] = labels.rgb(organ)
        inside = day.target[index].copy()
        for r, ring in enumerate(day.rings):
            inside |= ring[index]
            rgb[find_boundaries(inside, mode="inner")] = RING_RGB[min(r, len(RING_RGB) - 1)]
        rgb[find_boundaries(day.target[index], mode="inner")] = TARGET_RGB
        panels.append(rgb)
    height = max(p.shape[0] for p in panels)
    panels = [np.pad(p, ((0, height - p.shape[0]), (0, 0), (0, 0))) for p in panels]
    return np.concatenate(panels, axis=1)
