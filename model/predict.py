"""Segment scans, or a whole cohort, from the command line, writing the files the app's Scan tab offers.

    python -m model.predict INPUT... --out DIR [--model ID_OR_DIR] [--revision REV] [--truth train.csv]
                            [--bowel-bag] [--margin-mm N] [--compare-days]
                            [--course --target FILE[:ROI] [--dose RTDOSE] [--constraint C ...] [--reference DAY]]

Each INPUT is a scan (a folder of slices, a zip, a NIfTI file, a DICOM folder; loose slice or
.dcm files form one scan per folder they sit in) or a folder of scans, such as a Kaggle
download (``train/caseN/caseN_dayM/scans``), searched for every scan under it. A scan is
named after its ``caseN_dayM`` folder wherever its path has one. For each scan it writes
``DIR/<scan>_labels.nii.gz``, ``_masks.zip``, ``_organs.glb``, ``_submission.csv`` (Kaggle-named
slices), ``_review.csv`` (slices to review), for a DICOM series ``_seg.dcm`` and ``_rtstruct.dcm``
(with the planning structures ``--bowel-bag`` and ``--margin-mm`` ask for), and ``_summary.json``
(written last: the scan is finished) and prints one line with the
organ volumes; then ``DIR/submission.csv`` (all Kaggle-named scans) and ``DIR/volumes.csv``
(one row per scan). Run it again after an interruption: finished scans are skipped. With
``--truth`` it scores the cohort into ``DIR/scores.csv``. With ``--compare-days`` it writes
``DIR/changes.csv``: each case's later days against its first day, per organ (volume change,
centroid shift, Dice and HD95 after a rigid registration; :mod:`model.days`), and the same for the
``--truth`` masks; scans finished in an earlier run are compared without loading a model. Exit
status: 0, 1 when a scan (or a pair of days) failed (the others are still written), 2 when nothing
could run. With ``--course`` (one case's days, a target on the reference day, optionally a dose and
constraints) it writes ``DIR/course.csv``, ``dvh.csv``, plots and the mapped target's RTSTRUCTs
(:mod:`model.course_report`; docs/course.md). Research use only, not for diagnosis.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .checkpoint import CheckpointError, model_choice
from .cohort import compare_cohort_days, finished, plan_cohort, print_cohort_score, run, write_cohort_files
from .course_report import add_course_options, prepare_course, run_course
from .scans.base import ScanError
from .engines.machine import prefer_sleeping_threads
from .planning import PlanningRequest


def add_cohort_options(parser) -> None:
    """The options both cohort commands take (this one, and ``python -m train predict``, which imports them)."""
    parser.add_argument("--slice-thickness", type=float, default=None,
                        help="slice thickness in mm for Kaggle slice files (default 3)")
    parser.add_argument("--truth", type=Path, help="a train.csv: score the Kaggle-named scans (DIR/scores.csv)")
    parser.add_argument("--bowel-bag", action="store_true",
                        help="add a bowel bag (small ∪ large bowel) to the DICOM exports and volumes")
    parser.add_argument("--margin-mm", type=float, default=0.0, metavar="N",
                        help="add a planning margin (PRV) of N mm around each organ (and the bowel bag); 0: none")


def check_cohort_options(parser, args) -> None:
    """Refuse option values :func:`add_cohort_options` added that cannot be used (exits through ``parser.error``,
    before any scan is segmented);
    sets ``args.planning``, the :class:`~model.planning.PlanningRequest` of ``--bowel-bag`` and ``--margin-mm``."""
    try:
        args.planning = PlanningRequest(args.bowel_bag, args.margin_mm)
    except ValueError:
        parser.error(f"--margin-mm must be a number of mm ≥ 0, got {args.margin_mm:g}")
    if args.truth is not None and not args.truth.is_file():  # before a cohort is segmented, not after
        parser.error(f"--truth {args.truth}: no such file (a train.csv, or .csv.gz)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("inputs", nargs="+", type=Path, metavar="INPUT",
                        help="a scan (slice files, a folder of slices, a zip, a NIfTI file, a DICOM folder) "
                             "or a folder of scans (a Kaggle train/ folder, say)")
    parser.add_argument("--out", required=True, type=Path, help="folder for the output files")
    parser.add_argument("--model", help="Hub model repo id or local contract checkpoint dir (env MODEL); "
                                        "default: the blog's checkpoint")
    parser.add_argument("--revision", help="Hub revision to pin (env MODEL_REVISION)")
    add_cohort_options(parser)
    parser.add_argument("--compare-days", action="store_true",
                        help="write DIR/changes.csv: each case's later days against its first (and --truth's)")
    add_course_options(parser)
    args = parser.parse_args(argv)
    check_cohort_options(parser, args)
    prefer_sleeping_threads()  # before .inference loads torch

    try:
        sources = plan_cohort(args.inputs, args.out)
    except ScanError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:  # a course is checked whole before any scan is segmented
        course = prepare_course(args, sources) if args.course else None
    except (ScanError, ValueError) as err:
        print(f"error: course: {err}", file=sys.stderr)
        return 2
    for folder in args.inputs:
        if folder.is_dir() and not any(s.key.startswith(folder.absolute().as_posix() + "/") or
                                       s.key == folder.absolute().as_posix() for s in sources):
            print(f"note: no scans found in {folder}", file=sys.stderr)

    segmenter = None  # a cohort finished in an earlier run (--compare-days afterwards) needs no model
    if not all(finished(args.out, s) for s in sources):
        from .engines.choose import load_segmenter  # with a cached OpenVINO model, no torch in this process

        try:
            segmenter = load_segmenter(*model_choice(args.model, args.revision))
        except (CheckpointError, ValueError) as err:  # ValueError: an unknown UWMGI_ENGINE or UWMGI_PRECISION
            print(f"error: {err}", file=sys.stderr)
            return 2

    estimates = {s.name: s.estimated_slices() for s in sources}
    counts = {"done": 0, "skipped": 0, "failed": 0}
    seen_notes: set[str] = set()
    with CohortProgress(len(sources), sum(estimates.values())) as progress:
        for result in run(segmenter, sources, args.out, args.slice_thickness, progress=progress.slices,
                          planning=args.planning):
            counts[result.status] += 1
            if result.status == "done":
                progress.say(f"{result.line} -> {args.out}", sys.stdout)
                for note in result.summary.notes:
                    if note not in seen_notes:  # a cohort repeats its caveats (assumed thickness): say each once
                        seen_notes.add(note)
                        progress.say(f"  note: {note}")
            elif result.status == "failed":
                progress.say(f"error: {result.source.label}: {result.error}")
            actual = result.summary.slices if result.status == "done" else 0
            progress.scan_finished(actual - estimates[result.source.name])

    submission, volumes = write_cohort_files(sources, args.out)
    wrote = [p.name for p in (submission, volumes) if p is not None]
    print(f"cohort: {len(sources)} scans, {counts['done']} segmented, {counts['skipped']} finished in an earlier run, "
          f"{counts['failed']} failed; wrote {' and '.join(wrote)} in {args.out}", file=sys.stderr)
    if args.truth and not print_cohort_score(sources, args.out, args.truth):
        return 2
    failed = counts["failed"]
    if args.compare_days:
        changes, problems = compare_cohort_days(sources, args.out, args.truth, args.slice_thickness)
        for problem in problems:
            print(f"error: compare days: {problem}", file=sys.stderr)
        print(f"compare days: wrote {changes.name} in {args.out}", file=sys.stderr)
        failed += len(problems)
    if course is not None:
        failed += run_course(course, args)
    return 1 if failed else 0


class CohortProgress:
    """The cohort's progress on stderr: scans done, slices/s and time left.

    On a terminal, one tqdm bar over the cohort's slices (messages print above it); otherwise (a
    log file, a pipe) one ``progress:`` line per finished scan, as carriage-return bars garble logs.
    """

    def __init__(self, scans: int, slices: int):
        from tqdm import tqdm

        self.scans, self.finished, self.done, self.total = scans, 0, 0, slices
        self.start = time.monotonic()
        self.bar = tqdm(total=slices, unit="slice", file=sys.stderr, dynamic_ncols=True,
                        desc=f"scans 0/{scans}", disable=not sys.stderr.isatty())

    def __enter__(self) -> CohortProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()

    def slices(self, count: int) -> None:
        self.done += count
        self.bar.update(count)

    def say(self, line: str, stream=None) -> None:
        stream = stream or sys.stderr
        if self.bar.disable:
            print(line, file=stream, flush=True)
        else:
            self.bar.write(line, file=stream)

    def scan_finished(self, correction: int) -> None:
        """One more scan finished; ``correction`` turns its estimated slice count into the real one."""
        self.finished += 1
        self.total += correction
        if not self.bar.disable:
            self.bar.total = self.total
            self.bar.set_description(f"scans {self.finished}/{self.scans}")
            return
        elapsed = time.monotonic() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = f", about {self.bar.format_interval((self.total - self.done) / rate)} left" if rate else ""
        print(f"progress: {self.finished}/{self.scans} scans, {self.done} slices, {rate:.1f} slices/s{left}",
              file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
