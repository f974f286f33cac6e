"""The course report on disk: what ``python -m model.predict CASE_DIR --out DIR --course`` reads and writes.

:func:`prepare_course` checks everything that can be checked before a scan is segmented (the
days, the constraints, the target and the dose against the reference scan); :func:`finish_course`
then reads each day's masks from the run's ``<name>_masks.zip`` (as ``--compare-days`` does:
a scan finished in an earlier run is not segmented again), computes :func:`model.course.course`
and writes, all or nothing:

- ``course.csv``: one row per day × organ (:data:`COURSE_COLUMNS`, one ring column per ring, one
  VxGy column per threshold, then a status and a margin column per constraint);
- ``dvh.csv`` with a dose: the cumulative DVH of each organ on each day;
- ``course_<organ>.png``: in-target and ring volumes, and D0.5cc/Dmax with the constraints' limits, against the day;
- ``<day>_course_rtstruct.dcm`` for each day read from a DICOM series: the mapped target and its
  rings as ROIs ``PTV_mapped``, ``PTV_ring_0_10mm``, ``PTV_ring_10_20mm``.

The target is ``FILE:ROI`` (an RTSTRUCT ROI or DICOM SEG segment by name), ``FILE[:ID]`` (a label
NIfTI on the reference scan's grid: its non-zero voxels, or those equal to ``ID``), or
``box:S0:S1,R0:R1,C0:C1`` (a box of the reference scan's voxels, slices, rows and columns, ends excluded).
"""

from __future__ import annotations

import csv
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import labels
from .course import Course, CourseSettings, check_dose_overlap, course, parse_constraint
from .dicom.rtdose import Dose, read_rtdose
from .scans.base import Scan, ScanError
from .scans.kaggle import case_of, day_of
from .scans.sources import ScanSource

COURSE_CSV = "course.csv"
DVH_CSV = "dvh.csv"
#: The columns every ``course.csv`` starts with (the rings' names follow the ring edges; these are the defaults').
COURSE_COLUMNS = ("case", "day", "organ", "masks", "volume_ml", "in_target_cc")
TARGET_ROI = "PTV_mapped"


@dataclass
class CoursePlan:
    """What :func:`prepare_course` checked: the days in order, the reference, the target on it, the dose."""

    case: str
    days: list[tuple[str, ScanSource]]
    reference: str
    reference_scan: Scan
    target: np.ndarray
    dose: Dose | None
    settings: CourseSettings
    notes: list[str] = field(default_factory=list)


def add_course_options(parser) -> None:
    """``--course`` and the options that go with it."""
    parser.add_argument("--course", action="store_true",
                        help="one case's days against a target: DIR/course.csv, dvh.csv, plots, mapped RTSTRUCTs")
    parser.add_argument("--target", help="the target on the reference day: RTSTRUCT/SEG FILE:ROI, label NIfTI "
                                         "FILE[:ID], or box:S0:S1,R0:R1,C0:C1 (voxels)")
    parser.add_argument("--dose", type=Path, help="an RTDOSE on the reference day's frame")
    parser.add_argument("--constraint", action="append", default=[], metavar="C",
                        help="e.g. small_bowel:V33Gy<=0.5cc, stomach:D0.5cc<=33Gy, large_bowel:Dmax<=38Gy (repeatable)")
    parser.add_argument("--reference", metavar="DAY", help="the reference day (dayN, N or a scan name; default: the earliest)")
    parser.add_argument("--ring-mm", type=float, nargs="+", default=[10.0, 20.0], metavar="MM",
                        help="ring edges from the target's surface (default 10 20: rings 0-10 and 10-20 mm)")
    parser.add_argument("--v-gy", type=float, nargs="*", default=[], metavar="GY", help="VxGy thresholds to report")


def prepare_course(args, sources: list[ScanSource]) -> CoursePlan:
    """Everything checked before any scan is segmented. ``ScanError``/``ValueError`` with one line otherwise."""
    if not args.target:
        raise ValueError("--course needs --target")
    settings = course_settings(args.constraint, args.ring_mm, args.v_gy, args.dose is not None, "give --dose RTDOSE")
    cases = sorted({_case(s) for s in sources})
    if len(cases) != 1:
        raise ScanError(f"A course is one case's days; the input holds {len(cases)} cases ({', '.join(cases[:5])}).")
    days = sorted(((_day_label(s), s) for s in sources), key=lambda item: _day_order(item[0]))
    if len(days) < 2:
        raise ScanError(f"A course needs two or more days; {cases[0]} has {len(days)}.")
    reference = _pick_reference(args.reference, days)
    ref_source = dict(days)[reference]
    ref_scan = ref_source.load(args.slice_thickness)
    target, dose, notes = target_and_dose(args.target, args.dose, ref_scan)
    return CoursePlan(cases[0], days, reference, ref_scan, target, dose, settings, notes)


def course_settings(constraint_texts, ring_mm=(10.0, 20.0), v_gy=(), with_dose: bool = False,
                    dose_hint: str = "give an RTDOSE") -> CourseSettings:
    """The settings from the user's constraints (``ValueError`` with one line when one does not parse, or
    when there are constraints and no dose), ring edges (mm, after 0) and VxGy thresholds."""
    constraints = tuple(dict.fromkeys(parse_constraint(text) for text in constraint_texts))  # each once, in order
    if constraints and not with_dose:
        raise ValueError(f"constraints need a dose: {dose_hint}")
    return CourseSettings(ring_edges_mm=(0.0, *ring_mm), v_gy=tuple(v_gy), constraints=constraints)


def target_and_dose(spec: str, dose_path: str | Path | None, reference: Scan) -> tuple[np.ndarray, Dose | None, list[str]]:
    """The target on the reference scan (:func:`read_target`) and the dose checked against it (same patient
    and frame, overlapping), and the notes. ``ScanError``/``ValueError`` with one line otherwise."""
    target, notes = read_target(spec, reference)
    dose = None
    if dose_path is not None:
        dose_path = Path(dose_path)
        dose = read_rtdose(dose_path)
        notes += check_same_patient(reference, dose.patient_id, dose.frame_of_reference_uid, dose_path.name)
        check_dose_overlap(reference, dose)
    return target, dose, notes


def read_day_files(label: str, paths: list[str], slice_thickness_mm: float | None = None) -> tuple[Scan, list[Path]]:
    """One uploaded day: its scan and its earlier results (``_masks.zip``, ``_labels.nii.gz``), as the
    Compare days tab reads them (:func:`model.days.compare_day_files`); the scan must be 3D."""
    from .days import _read

    return _read(label, paths, slice_thickness_mm)


def day_masks(scan: Scan, results: list[Path], get_segmenter) -> np.ndarray:
    """The day's organ masks: from its earlier result when one was uploaded, else the model's."""
    from .days import _masks

    return _masks(scan, results, get_segmenter)


def course_of_scans(days: list[tuple[str, Scan, np.ndarray]], target: np.ndarray, dose: Dose | None,
                    settings: CourseSettings, out_dir: str | Path, case: str = "course",
                    scan_names: dict[str, str] | None = None) -> tuple[Course, list[Path], list[str]]:
    """The course of days already read and segmented (``(label, scan, organ_masks)``, the reference first,
    ``target`` on it): :func:`model.course.course`, then its files written (:func:`write_course`).
    The app's Course tab runs this on uploaded days. Returns the course, the files and the notes."""
    result = course(days[0][0], target, days, dose, settings)
    names = scan_names or {label: scan.name for label, scan, _ in days}
    return result, write_course([("predicted", result)], case, Path(out_dir), names), result.notes


def read_target(spec: str, scan: Scan) -> tuple[np.ndarray, list[str]]:
    """The target ``(D, H, W) bool`` on ``scan`` from a ``--target`` value (module notes), and notes."""
    if spec.startswith("box:") and not Path(spec).exists():
        return _box_target(spec[4:], scan), []
    path, name = Path(spec), None
    if not path.exists() and ":" in spec:
        head, name = spec.rsplit(":", 1)
        path = Path(head)
    if not path.is_file():
        raise ScanError(f"Target file {path} not found.")
    from .scans.kinds import kind_of

    kind = kind_of(path)
    if kind == "dicom":
        from .dicom.truth import named_structure, structure_header

        if not name:
            structure_header(path)  # an RTDOSE or an image given as the target is named as such
            raise ScanError(f"Name the target's structure in {path.name} (its ROI name; on the command line --target FILE:ROI).")

        mask, header = named_structure(path, name, scan)
        # An RTSTRUCT names its frame in three places (a SEG in the first): every one must be the scan's.
        frames = {str(header.get("FrameOfReferenceUID", "") or "")}
        frames |= {str(item.get("FrameOfReferenceUID", "") or "") for item in header.get("ReferencedFrameOfReferenceSequence", [])}
        frames |= {str(roi.get("ReferencedFrameOfReferenceUID", "") or "") for roi in header.get("StructureSetROISequence", [])}
        notes = []
        for frame in sorted(frames - {""}) or [""]:
            notes = check_same_patient(scan, str(header.get("PatientID", "") or ""), frame, path.name)
        return mask, notes
    if kind == "nifti":
        from .scans.nifti import read_nifti

        labelled = read_nifti(path)
        if labelled.shape != scan.shape or (scan.kind != "slices" and not np.allclose(
                labelled.affine, scan.affine, atol=1e-3 * min(scan.spacing_mm))):
            raise ScanError(f"{path.name} is not on the reference scan's grid ({labelled.describe()}; "
                            f"the reference: {scan.describe()}).")
        if name and not name.isdigit():
            raise ValueError(f"{path.name} is a label NIfTI: its structures are label ids (a number such as 2), "
                             f"not {name!r}.")
        ids = np.rint(labelled.voxels).astype(np.int64)
        mask = ids == int(name) if name else ids != 0
        if not mask.any():
            raise ScanError(f"{path.name} has no voxel {'labelled ' + name if name else 'set'}.")
        return mask, []
    raise ScanError(f"{path.name} is neither an RTSTRUCT, a DICOM SEG nor a label NIfTI.")


def check_same_patient(scan: Scan, patient_id: str, frame_uid: str, what: str) -> list[str]:
    """:class:`ScanError` when a DICOM target or dose names another patient or frame of reference than
    the reference scan; a note when the scan (not DICOM) cannot tell."""
    if scan.source is None:
        return [f"{what}: the reference scan is not a DICOM series, so its patient and frame of reference "
                "could not be checked."]
    first = scan.source.datasets[0]
    if patient_id and str(first.get("PatientID", "") or "") not in ("", patient_id):
        raise ScanError(f"{what} belongs to another patient than the reference scan (PatientID differs).")
    if frame_uid and str(first.get("FrameOfReferenceUID", "") or "") not in ("", frame_uid):
        raise ScanError(f"{what} is on another frame of reference than the reference scan (FrameOfReferenceUID differs).")
    return []


def finish_course(plan: CoursePlan, out_dir: str | Path, truth_csv: str | Path | None = None,
                  slice_thickness_mm: float | None = None) -> tuple[list[Path], list[str]]:
    """Compute the course from the finished days' masks and write its files; returns them and the notes."""
    from .truth import load_ground_truth

    out_dir = Path(out_dir)
    days, truths = [], []
    for label, source in plan.days:
        scan = plan.reference_scan if label == plan.reference else source.load(slice_thickness_mm)
        masks = load_ground_truth([out_dir / f"{source.name}_masks.zip"], scan)[0]
        days.append((label, scan, masks))
        if truth_csv:
            truths.append((label, scan, load_ground_truth([truth_csv], scan)[0]))
    predicted = course(plan.reference, plan.target, days, plan.dose, plan.settings)
    results = [("predicted", predicted)]
    if truths:  # the same registrations, the true masks
        known = {d.label: d.registration for d in predicted.days}
        results.append(("truth", course(plan.reference, plan.target, truths, plan.dose, plan.settings, known)))
    names = {label: source.name for label, source in plan.days}
    return write_course(results, plan.case, out_dir, names), plan.notes + predicted.notes


def run_course(plan: CoursePlan, args) -> int:
    """The CLI's last step: compute and write the course, print its notes (a failing day first); 0 or 1."""
    try:
        files, notes = finish_course(plan, args.out, args.truth, args.slice_thickness)
    except (ScanError, ValueError) as err:
        print(f"error: course: {err}", file=sys.stderr)
        return 1
    for note in notes:
        print(f"course: {note}", file=sys.stderr)
    print(f"course: wrote {', '.join(p.name for p in files)} in {args.out}", file=sys.stderr)
    return 0


def course_rows(result: Course, case: str, masks: str = "predicted") -> list[dict]:
    """One ``course.csv`` row per day × organ, ``None`` where a value does not exist."""
    settings = result.settings
    rows = []
    for day in result.days:
        reg = day.registration
        for o in day.organs:
            row = {"case": case, "day": day.label, "organ": o.organ, "masks": masks, "volume_ml": o.volume_ml,
                   "in_target_cc": o.in_target_cc}
            row.update({f"{name}_cc": cc for name, cc in zip(settings.ring_names, o.ring_cc)})
            row.update({"min_distance_mm": o.min_distance_mm, "dmax_gy": o.dmax_gy})
            row.update({_dcc_column(x): o.dx_cc_gy.get(x) for x in settings.volumes_cc})
            row.update({_vgy_column(x): o.v_gy_cc.get(x) for x in settings.thresholds_gy})
            row.update({"registration_translation_mm": reg.translation_length_mm,
                        "registration_rotation_deg": reg.rotation_angle_deg})
            for c in settings.constraints:
                found = [item for item in o.constraints if item[0] is c]
                row[c.text] = found[0][2] if found else None
                row[f"{c.text} margin"] = found[0][3] if found else None
            rows.append(row)
    return rows


def course_columns(settings: CourseSettings) -> list[str]:
    return [*COURSE_COLUMNS, *(f"{n}_cc" for n in settings.ring_names), "min_distance_mm", "dmax_gy",
            *(_dcc_column(x) for x in settings.volumes_cc), *(_vgy_column(x) for x in settings.thresholds_gy),
            "registration_translation_mm", "registration_rotation_deg",
            *(col for c in settings.constraints for col in (c.text, f"{c.text} margin"))]


def write_course(results: list[tuple[str, Course]], case: str, out_dir: Path, scan_names: dict[str, str]) -> list[Path]:
    """Write every file into a scratch folder in ``out_dir``, then move them in: all or nothing."""
    predicted = results[0][1]
    settings = predicted.settings
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory(prefix=".course-", dir=out_dir) as tmp:
        tmp = Path(tmp)
        columns = course_columns(settings)
        with open(tmp / COURSE_CSV, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            for masks, result in results:
                for row in course_rows(result, case, masks):
                    writer.writerow({k: _cell(row.get(k)) for k in columns})
        if any(d.dose is not None for d in predicted.days):
            with open(tmp / DVH_CSV, "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["case", "day", "organ", "masks", "dose_gy", "volume_cc", "volume_pct"])
                for masks, result in results:
                    for day in result.days:
                        for o in day.organs:
                            if o.dvh is None:
                                continue
                            for gy, cc in zip(*o.dvh):
                                pct = 100.0 * cc / o.volume_ml if o.volume_ml else 0.0
                                writer.writerow([case, day.label, o.organ, masks, f"{gy:.2f}", f"{cc:.4f}", f"{pct:.3f}"])
        for organ in labels.ORGANS:
            plot_organ(predicted, organ, tmp / f"course_{organ}.png")
        for day in predicted.days:
            if day.scan.kind == "dicom" and day.scan.source is not None:
                write_course_rtstruct(day, settings, tmp / f"{scan_names.get(day.label, day.label)}_course_rtstruct.dcm")
        for path in sorted(tmp.iterdir()):
            os.replace(path, out_dir / path.name)
            written.append(out_dir / path.name)
    return written


def write_course_rtstruct(day, settings: CourseSettings, path: Path) -> Path:
    """The day's mapped target and rings as RTSTRUCT ROIs (``PTV_mapped``, ``PTV_ring_0_10mm``, …) on its series."""
    from .dicom.rtstruct import write_rtstruct
    from .planning import Structure

    day.scan.source.check_referenceable()
    structures = [Structure("ptv_mapped", TARGET_ROI, day.target, "#ff00ff", "target")]
    structures += [Structure(f"ptv_{name}", f"PTV_{name}", ring, "#ffff00", "ring")
                   for name, ring in zip(settings.ring_names, day.rings)]
    return write_rtstruct(structures, day.scan.source, path,
                          series_description="Target mapped by rigid registration, research use")


def plot_organ(result: Course, organ: str, path: Path) -> Path:
    """One organ over the days: in-target and ring volumes (cc); with a dose, D0.5cc and Dmax (Gy) with the
    limits of the organ's dose constraints drawn as dashed lines."""
    import matplotlib

    matplotlib.use("Agg")  # no display; set here, where the process first draws
    import matplotlib.pyplot as plt

    settings = result.settings
    days = [d.label for d in result.days]
    organs = [next(o for o in d.organs if o.organ == organ) for d in result.days]
    dosed = any(o.dmax_gy is not None for o in organs)
    fig, axes = plt.subplots(2 if dosed else 1, 1, figsize=(6.4, 6.0 if dosed else 3.4), squeeze=False)
    top = axes[0][0]
    x = np.arange(len(days))
    top.plot(x, [o.in_target_cc for o in organs], "o-", label="in target")
    for r, name in enumerate(settings.ring_names):
        top.plot(x, [o.ring_cc[r] for o in organs], "o-", label=name.replace("ring_", "ring ").replace("_", "-"))
    for c in settings.constraints:
        if c.organ == organ and c.metric == "vgy":
            top.plot(x, [o.v_gy_cc.get(c.at, np.nan) for o in organs], "s:", label=f"V{c.at:g}Gy")
            top.axhline(c.limit, color="red", linestyle="--", linewidth=1, label=c.text)
    top.set_ylabel("volume (cc)")
    top.set_title(f"{labels.DISPLAY_NAMES[organ]}: course against the target ({result.reference} = reference)")
    top.legend(fontsize=7)
    if dosed:
        bottom = axes[1][0]
        d05 = [o.dx_cc_gy.get(0.5) for o in organs]
        bottom.plot(x, [np.nan if v is None else v for v in d05], "o-", label="D0.5cc")
        bottom.plot(x, [np.nan if o.dmax_gy is None else o.dmax_gy for o in organs], "o-", label="Dmax")
        for c in settings.constraints:
            if c.organ == organ and c.metric != "vgy":
                bottom.axhline(c.limit, color="red", linestyle="--", linewidth=1, label=c.text)
        bottom.set_ylabel("dose (Gy)")
        bottom.legend(fontsize=7)
    for row in axes:
        row[0].set_xticks(x, days)
    axes[-1][0].set_xlabel("day (plan not adapted: rigid mapping of target and dose)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _box_target(spec: str, scan: Scan) -> np.ndarray:
    try:
        ranges = [tuple(int(v) for v in part.split(":")) for part in spec.split(",")]
        if len(ranges) != 3 or any(len(r) != 2 for r in ranges):
            raise ValueError
    except ValueError:
        raise ValueError(f"box target {spec!r}: expected box:S0:S1,R0:R1,C0:C1 (voxel ranges, ends excluded)") from None
    if any(not 0 <= a < b <= n for (a, b), n in zip(ranges, scan.shape)):
        raise ValueError(f"box target {spec!r} is not inside the reference scan's {scan.shape} voxels")
    mask = np.zeros(scan.shape, dtype=bool)
    mask[tuple(slice(a, b) for a, b in ranges)] = True
    return mask


def _case(source: ScanSource) -> str:
    """The case a day belongs to: ``caseN`` from its path, else ``course`` (a folder of one patient's scans)."""
    return case_of(source.case_day) if source.case_day else "course"


def _day_label(source: ScanSource) -> str:
    return day_of(source.case_day) if source.case_day else source.name


def _day_order(label: str):
    return (0, int(label[3:]), "") if label.startswith("day") and label[3:].isdigit() else (1, 0, label)


def _pick_reference(wanted: str | None, days: list[tuple[str, ScanSource]]) -> str:
    if wanted is None:
        return days[0][0]
    for label, source in days:
        if wanted in (label, label[3:], source.name, source.case_day):
            return label
    raise ScanError(f"The reference day {wanted!r} is not among the days: {', '.join(label for label, _ in days)}.")


def _dcc_column(x: float) -> str:
    return f"d{x:g}cc_gy".replace(".", "_")


def _vgy_column(x: float) -> str:
    return f"v{x:g}gy_cc".replace(".", "_")


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.6g}"
    return str(value)
