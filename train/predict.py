"""``python -m train predict``: ``python -m model.predict``'s cohort run, sharded by scan over GPUs and nodes.

    python -m train predict CHECKPOINT INPUT... --out DIR [--trainer.devices N] [--trainer.num_nodes M]

Each process takes every N-th scan (round robin in the cohort's order), stacks its 2.5D inputs
and writes its files whole, through the same :func:`model.cohort.run` as the single-process
command; once every process is done, rank 0 rebuilds ``submission.csv`` and ``volumes.csv``
with :func:`model.cohort.write_cohort_files`. So the files are byte for byte those of
``python -m model.predict`` on the same data and checkpoint (and the same kind of device:
GPU and CPU kernels round differently). Resuming and failures work as there: finished scans
are skipped, a failed scan is reported and the others go on (exit status 1).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import lightning as L
import torch

from model.checkpoint import CheckpointError
from model.cohort import plan_cohort, print_cohort_score, read_summary, run, write_cohort_files
from model.planning import PlanningRequest
from model.predict import add_cohort_options, check_cohort_options
from model.scans.base import ScanError
from model.scans.sources import ScanSource


class CohortPredictor(L.LightningModule):
    """Runs the scans a process is given; the model is the serving :class:`~model.engines.torch.Segmenter`, not trained."""

    def __init__(self, checkpoint: str, revision: str | None, sources: list[ScanSource], out_dir: Path,
                 slice_thickness_mm: float | None = None, *, planning: PlanningRequest = PlanningRequest()):
        super().__init__()
        self.checkpoint, self.revision = checkpoint, revision
        self.sources, self.out_dir, self.slice_thickness_mm = sources, out_dir, slice_thickness_mm
        self.planning = planning
        self.segmenter = None
        # With fewer scans than processes some get none; they still join the barrier in main().
        self.allow_zero_length_dataloader_with_multiple_devices = True

    def setup(self, stage: str) -> None:
        from model.engines.torch import Segmenter

        # Kept off the module's parameters: Lightning neither converts nor syncs it; each process loads its own.
        self.segmenter = Segmenter.load(self.checkpoint, self.revision, device=str(self.trainer.strategy.root_device))

    def predict_dataloader(self):
        rank, world = self.trainer.global_rank, self.trainer.world_size
        shard = list(range(len(self.sources)))[rank::world]  # whole scans: one process stacks and writes each
        return torch.utils.data.DataLoader(shard, batch_size=1, collate_fn=lambda batch: batch)

    def predict_step(self, batch: list[int], batch_idx: int) -> list[str]:
        """Segment and write the batch's scans; returns their statuses (``done``, ``skipped``, ``failed``)."""
        statuses = []
        for result in run(self.segmenter, [self.sources[i] for i in batch], self.out_dir, self.slice_thickness_mm,
                          planning=self.planning):
            prefix = f"[rank {self.trainer.global_rank}] "
            if result.status == "done":
                _say(f"{prefix}{result.line} -> {self.out_dir}", sys.stdout)
            elif result.status == "failed":
                _say(f"{prefix}error: {result.source.label}: {result.error}", sys.stderr)
            statuses.append(result.status)
        return statuses


def _say(line: str, stream) -> None:
    """One line in one write, so the lines of processes sharing a pipe do not run into each other."""
    stream.write(line + "\n")
    stream.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train predict",
                                     description="Segment a cohort of scans on N GPUs or nodes (sharded by scan).")
    parser.add_argument("checkpoint", help="contract checkpoint: a directory or a Hub model repo")
    parser.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="scans, or folders of scans")
    parser.add_argument("--out", required=True, type=Path, help="folder for the output files")
    parser.add_argument("--revision", help="Hub revision to pin")
    add_cohort_options(parser)
    parser.add_argument("--trainer.accelerator", dest="accelerator", default="auto", help="cpu, gpu, ... (default auto)")
    parser.add_argument("--trainer.devices", dest="devices", default="auto", help="devices per node (default auto)")
    parser.add_argument("--trainer.num_nodes", dest="num_nodes", type=int, default=1, help="nodes (default 1)")
    parser.add_argument("--trainer.strategy", dest="strategy", default="auto", help="e.g. ddp (default auto)")
    args = parser.parse_args(argv)
    check_cohort_options(parser, args)
    try:
        sources = plan_cohort(args.inputs, args.out)
    except ScanError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    devices = int(args.devices) if str(args.devices).isdigit() else args.devices
    trainer = L.Trainer(accelerator=args.accelerator, devices=devices, num_nodes=args.num_nodes,
                        strategy=args.strategy, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, use_distributed_sampler=False)
    module = CohortPredictor(args.checkpoint, args.revision, sources, args.out, args.slice_thickness,
                             planning=args.planning)
    try:
        trainer.predict(module, return_predictions=False)
    except CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    # Not in on_predict_end: a process given no scan skips the predict loop and its hooks.
    trainer.strategy.barrier("cohort written")  # every process's scans are on disk
    if not trainer.is_global_zero:
        return 0
    write_cohort_files(sources, args.out)
    failed = [s for s in sources if read_summary(args.out, s.name) is None]
    print(f"cohort: {len(sources)} scans on {trainer.world_size} processes, {len(failed)} failed; "
          f"wrote the cohort's files in {args.out}", file=sys.stderr)
    if args.truth and not print_cohort_score(sources, args.out, args.truth):
        return 2
    return 1 if failed else 0
