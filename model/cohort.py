"""Many scans in one run: segment each, resume after an interruption, and write the cohort's files.

For each :class:`~model.scans.sources.ScanSource` :func:`run` writes the Scan tab's files
(the segmenter's ``segment_scan``, then :func:`model.exports.export_scan`: with the review CSV, the planning structures asked for, and
for a DICOM series its SEG and RTSTRUCT) and then ``<name>_summary.json``: written last, it marks
the scan finished, so a second run skips it. :func:`write_cohort_files` rebuilds, from those
per-scan files alone, ``submission.csv`` (one Kaggle submission for every Kaggle-named scan)
and ``volumes.csv`` (one row per scan, with the planning structures' volumes and the number of
review flags), and with ``--compare-days`` :func:`compare_cohort_days` adds ``changes.csv`` (each
case's later treatment days against its first). The command line and the Lightning predictor
(``python -m train predict``) both call these, so their files are byte for byte the same (but for
the new UIDs in the DICOM files).

Memory: one scan at a time. Nothing of a finished scan is kept but its summary (a few hundred bytes).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import labels
from .measure import structure_volumes_ml, summary_line
from .metric import competition_score, score_submission
from .exports import export_scan
from .planning import PlanningRequest
from .rle import RleCsv
from .scans.base import ScanError
from .scans.sources import NameClashError, ScanSource, find_scans

SUMMARY_SUFFIX = "_summary.json"
SUBMISSION = "submission.csv"
VOLUMES = "volumes.csv"
SCORES = "scores.csv"
CHANGES = "changes.csv"
SUBMISSION_HEADER = "id,class,predicted"


@dataclass(frozen=True)
class OrganSummary:
    """One organ of a finished scan: its volume (ml, 3 decimals), voxels, and the slice numbers it spans (``None`` if absent)."""

    volume_ml: float
    voxels: int
    first_slice: int | None
    last_slice: int | None


@dataclass(frozen=True)
class StructureSummary:
    """One planning structure of a finished scan (bowel bag, a PRV): its label and volume (ml, 3 decimals)."""

    label: str
    volume_ml: float


@dataclass(frozen=True)
class ScanSummary:
    """``<name>_summary.json``: what a finished scan was and what was found, written last (the marker that the
    scan is finished) and read back to resume, to rebuild the cohort's files and to compare days.

    ``source`` is the input's key (its absolute path), ``label`` how it is shown; ``submission`` the
    scan's own Kaggle CSV (``None`` unless its slices have Kaggle ids); ``spacing_mm`` (slice, row,
    col); ``files`` every file written for it. Summaries of older runs may lack ``structures`` and
    ``review_flags``.
    """

    name: str
    label: str
    source: str
    kind: str
    case_day: str | None
    submission: str | None
    slices: int
    height: int
    width: int
    first_slice: int
    last_slice: int
    spacing_mm: tuple[float, float, float]
    notes: tuple[str, ...]
    organs: dict[str, OrganSummary]
    structures: dict[str, StructureSummary] = field(default_factory=dict)
    review_flags: int | None = None
    files: tuple[str, ...] = ()

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ScanSummary:
        """Raises ``ValueError`` (``json.JSONDecodeError``, a missing or unknown key) for a file that is not one."""
        data = json.loads(text)
        try:
            return cls(**{**data, "spacing_mm": tuple(data["spacing_mm"]), "notes": tuple(data["notes"]),
                          "files": tuple(data.get("files", ())),
                          "organs": {k: OrganSummary(**v) for k, v in data["organs"].items()},
                          "structures": {k: StructureSummary(**v) for k, v in data.get("structures", {}).items()}})
        except (KeyError, TypeError) as err:
            raise ValueError(f"not a scan summary: {err}") from None


@dataclass(frozen=True)
class ScanResult:
    """What became of one source: ``status`` is ``"done"``, ``"skipped"`` (finished in an earlier run) or ``"failed"``."""

    source: ScanSource
    status: str
    summary: ScanSummary | None = None
    error: str | None = None
    line: str | None = None  # the one-line summary of a scan segmented now


def plan_cohort(inputs: list[Path], out_dir: str | Path) -> list[ScanSource]:
    """Every scan under ``inputs`` (:func:`~model.scans.sources.find_scans`), checked against ``out_dir``.

    Raises :class:`ScanError` (one line) when two would write the same files or none is found;
    both CLIs (``model.predict``, ``train predict``) start here.
    """
    sources = find_scans(inputs)
    check_out_dir(sources, out_dir)
    if not sources:
        raise ScanError(f"no scans found in {', '.join(map(str, inputs))}.")
    return sources


def check_out_dir(sources: list[ScanSource], out_dir: str | Path) -> None:
    """Refuse, before anything is written, a run whose outputs would replace another input's.

    ``out_dir`` may hold this run's own finished scans (a resumed run); a finished scan of the
    same name from another input raises :class:`NameClashError`.
    """
    for source in sources:
        summary = read_summary(out_dir, source.name)
        if summary is not None and summary.source != source.key:
            raise NameClashError(f"{Path(out_dir) / (source.name + SUMMARY_SUFFIX)} is from another input "
                                 f"({summary.label}), not {source.label}; use another --out.")


def read_summary(out_dir: str | Path, name: str) -> ScanSummary | None:
    """The summary of a finished scan in ``out_dir``, or ``None``."""
    path = Path(out_dir) / f"{name}{SUMMARY_SUFFIX}"
    try:
        return ScanSummary.from_json(path.read_text())
    except (OSError, ValueError):  # absent, or cut short by an interruption: not finished
        return None


def finished(out_dir: str | Path, source: ScanSource) -> bool:
    """Whether ``out_dir`` holds this input's finished outputs (a summary naming its path)."""
    summary = read_summary(out_dir, source.name)
    return summary is not None and summary.source == source.key


def run(segmenter, sources: list[ScanSource], out_dir: str | Path, slice_thickness_mm: float | None = None,
        progress: Callable[[int], None] | None = None, *,
        planning: PlanningRequest = PlanningRequest()) -> Iterator[ScanResult]:
    """Segment each source in turn into ``out_dir``; yield one :class:`ScanResult` per source.

    Scans finished in an earlier run (a summary with this input's path) are skipped. A scan that
    cannot be read or segmented is yielded as failed, and the run goes on. ``progress(n)`` is
    called with each chunk's new slice count. One scan is held in memory at a time.
    ``planning`` asks for planning structures (:func:`model.exports.write_outputs`).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for source in sources:
        if finished(out_dir, source):
            yield ScanResult(source, "skipped", read_summary(out_dir, source.name))
            continue
        try:
            yield segment_source(segmenter, source, out_dir, slice_thickness_mm, progress, planning=planning)
        except ScanError as err:
            yield ScanResult(source, "failed", error=str(err))
        except Exception as err:  # noqa: BLE001 - one scan's failure must not stop the cohort
            reason = " ".join(str(err).split())[:200]
            yield ScanResult(source, "failed", error=f"{type(err).__name__}: {reason}")


def segment_source(segmenter, source: ScanSource, out_dir: Path, slice_thickness_mm: float | None = None,
                   progress: Callable[[int], None] | None = None, *,
                   planning: PlanningRequest = PlanningRequest()) -> ScanResult:
    """Read, segment and write one scan; its summary file last. Raises what reading or writing raises."""
    scan = source.load(slice_thickness_mm)
    done = 0

    def advance(now: int) -> None:
        nonlocal done
        if progress is not None:
            progress(now - done)
        done = now

    segmentation = segmenter.segment_scan(scan, keep_probabilities=True).run(advance)  # the review flags score them
    result = export_scan(segmentation, scan, out_dir, planning)
    outputs, volumes = result.outputs, result.volumes
    summary = ScanSummary(
        scan.name, source.label, source.key, scan.kind, scan.case_day, outputs.csv.name if outputs.csv else None,
        len(scan), scan.shape[1], scan.shape[2], scan.slice_numbers[0], scan.slice_numbers[-1],
        tuple(scan.spacing_mm), tuple(scan.notes + list(outputs.notes)),
        {v.organ: OrganSummary(round(v.volume_ml, 3), v.voxels, v.first_slice, v.last_slice) for v in volumes},
        {s.key: StructureSummary(s.label, round(ml, 3))
         for s, (_, ml) in zip(outputs.structures, structure_volumes_ml(outputs.structures, scan.spacing_mm))},
        len(outputs.flags), tuple(p.name for p in outputs.files()))
    path = out_dir / f"{scan.name}{SUMMARY_SUFFIX}"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(summary.to_json())
    os.replace(tmp, path)  # the marker of a finished scan appears whole or not at all
    return ScanResult(source, "done", summary, line=summary_line(scan, volumes))


# --------------------------------------------------------------------------- the cohort's files


def write_cohort_files(sources: list[ScanSource], out_dir: str | Path) -> tuple[Path | None, Path]:
    """Rebuild ``submission.csv`` and ``volumes.csv`` from the finished scans' files, in source order.

    ``submission.csv``: the per-scan submissions of every Kaggle-named scan, one header; every
    slice id × 3 classes, ``predicted`` empty where nothing was found. Not written (and an old
    one removed) when no scan has Kaggle ids. Returns ``(submission or None, volumes)``.
    """
    out_dir = Path(out_dir)
    summaries = [s for s in (read_summary(out_dir, src.name) for src in sources) if s is not None]
    submission = out_dir / SUBMISSION
    parts = [out_dir / s.submission for s in summaries if s.submission]
    if parts:
        with open(submission.with_suffix(".tmp"), "w", newline="") as out:
            out.write(SUBMISSION_HEADER + "\r\n")
            for part in parts:
                with open(part, newline="") as f:
                    header = f.readline()
                    if header.strip() != SUBMISSION_HEADER:
                        raise ValueError(f"{part} does not start with {SUBMISSION_HEADER}")
                    out.writelines(f)
        os.replace(submission.with_suffix(".tmp"), submission)
    else:
        submission.unlink(missing_ok=True)
    volumes = out_dir / VOLUMES
    columns = ["scan", "case_day", "kind", "slices", "first_slice", "last_slice", "height", "width",
               "slice_mm", "row_mm", "col_mm"]
    for organ in labels.ORGANS:
        columns += [f"{organ}_ml", f"{organ}_first_slice", f"{organ}_last_slice"]
    # Planning structures: one column each, in the order first seen; empty for scans without it.
    structures = list(dict.fromkeys(key for s in summaries for key in s.structures))
    with open(volumes, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns + [f"{key}_ml" for key in structures] + ["review_flags", "source"])
        for s in summaries:
            row = [s.name, s.case_day or "", s.kind, s.slices, s.first_slice, s.last_slice, s.height, s.width,
                   *s.spacing_mm]
            for organ in labels.ORGANS:
                o = s.organs[organ]
                row += [f"{o.volume_ml:.3f}", o.first_slice or "", o.last_slice or ""]
            row += [f"{s.structures[key].volume_ml:.3f}" if key in s.structures else "" for key in structures]
            writer.writerow(row + ["" if s.review_flags is None else s.review_flags, s.label])
    return (submission if parts else None), volumes


def score_cohort(sources: list[ScanSource], out_dir: str | Path, truth_csv: str | Path) -> tuple[list[dict], dict]:
    """Score the finished Kaggle-named scans of ``submission.csv`` against a ``train.csv``; write ``scores.csv``.

    Per case-day and overall (the overall row last, named ``all``), by
    :func:`model.metric.score_submission` and its one rule (a slice the prediction lacks counts as
    empty; a scan the truth lacks is not scored and is named in the overall row's ``unscored``;
    a slice the truth lacks is refused). Run :func:`write_cohort_files` first.
    """
    out_dir = Path(out_dir)
    summaries = [s for s in (read_summary(out_dir, src.name) for src in sources)
                 if s is not None and s.submission]
    case_days = [s.case_day for s in summaries]
    shapes = {s.case_day: (s.height, s.width) for s in summaries}
    if case_days:
        rows, overall, unscored = score_submission(RleCsv(truth_csv, case_days), RleCsv(out_dir / SUBMISSION),
                                                   case_days, shapes)
    else:  # no Kaggle-named scan: nothing to score
        rows, overall, unscored = [], competition_score([]), []
    overall = {"case_day": "all", "slices": sum(r["slices"] for r in rows), **overall.as_dict()}
    with open(out_dir / SCORES, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(overall))
        writer.writeheader()
        writer.writerows([*rows, overall])
    return rows, {**overall, "unscored": unscored}


def print_cohort_score(sources: list[ScanSource], out_dir: str | Path, truth_csv: str | Path) -> bool:
    """The command lines' ``--truth``: :func:`score_cohort`, its overall row printed as one JSON line on stdout;
    ``False`` after one ``error:`` line on stderr when the truth cannot be read or scored."""
    import sys

    try:
        _, overall = score_cohort(sources, out_dir, truth_csv)
    except (OSError, ValueError) as err:  # model.metric.ScoringError is a ValueError
        print(f"error: {truth_csv}: {err}", file=sys.stderr)
        return False
    print(json.dumps(overall))
    return True


# --------------------------------------------------------------------------- treatment days


def compare_cohort_days(sources: list[ScanSource], out_dir: str | Path, truth_csv: str | Path | None = None,
                        slice_thickness_mm: float | None = None) -> tuple[Path, list[str]]:
    """Write ``changes.csv``: each case's later days against its first day (:func:`model.days.compare_days`).

    Works from the finished scans' files alone: each day's image is read again and its masks come
    from ``<name>_masks.zip`` (overlaps kept), so nothing is segmented. Only scans named ``caseN_dayM``
    take part. With ``truth_csv`` the true masks of both days are compared too, with the same
    registration, each truth row after its predicted row. Returns the path and one line per pair
    that could not be compared, and per day the truth lacks (the other rows are still written).
    """
    from .days import compare_days, write_changes_csv
    from .scans.kaggle import case_and_day
    from .truth import load_ground_truth

    out_dir = Path(out_dir)
    by_case: dict[str, list[tuple[int, ScanSource, ScanSummary]]] = {}
    for source in sources:
        summary = read_summary(out_dir, source.name)
        if summary is not None and summary.case_day:
            case, day = case_and_day(summary.case_day)
            by_case.setdefault(case, []).append((day, source, summary))

    rows, problems = [], []

    def read_day(source: ScanSource, summary: ScanSummary):
        """The scan, its predicted masks, and its true masks (``None`` without ``truth_csv`` or rows for it)."""
        scan = source.load(slice_thickness_mm)
        masks = load_ground_truth([out_dir / f"{summary.name}_masks.zip"], scan)[0]
        truth = None
        if truth_csv:
            try:
                truth = load_ground_truth([truth_csv], scan)[0]
            except ScanError as err:  # the predicted rows are still worth writing
                problems.append(f"{summary.case_day}: no truth compared: {err}")
        return scan, masks, truth

    for case, found in by_case.items():
        found.sort(key=lambda item: item[0])
        if len(found) < 2:
            continue
        (first, source_a, summary_a), later = found[0], found[1:]
        try:
            scan_a, masks_a, truth_a = read_day(source_a, summary_a)
        except ScanError as err:
            problems.append(f"{case} day{first}: {err}")
            continue
        for day, source_b, summary_b in later:
            try:
                scan_b, masks_b, truth_b = read_day(source_b, summary_b)
                predicted = compare_days(scan_a, masks_a, scan_b, masks_b)
                pair = predicted.rows(case, f"day{first}", f"day{day}")
                if truth_a is not None and truth_b is not None:
                    true = compare_days(scan_a, truth_a, scan_b, truth_b, registration=predicted.registration)
                    truth_rows = true.rows(case, f"day{first}", f"day{day}", masks="truth")
                    pair = [row for both in zip(pair, truth_rows) for row in both]
            except ScanError as err:
                problems.append(f"{case} day{first} vs day{day}: {err}")
                continue
            except Exception as err:  # noqa: BLE001 - one pair's failure must not stop the cohort
                reason = " ".join(str(err).split())[:200]
                problems.append(f"{case} day{first} vs day{day}: {type(err).__name__}: {reason}")
                continue
            rows += pair
    return write_changes_csv(rows, out_dir / CHANGES), problems
