"""``python -m train``: LightningCLI subcommands plus ``export``, ``evaluate``, ``score`` and ``predict``.

    python -m train fit --config train/configs/uwmgi.yaml --data.data_dir DATA
    python -m train export CKPT DST [--push-to-hub REPO]
    python -m train predict CHECKPOINT ROOT --out DIR [--trainer.devices N] [--trainer.num_nodes M]
    python -m train evaluate CHECKPOINT DATA_DIR [--fold K]
    python -m train score TRUTH_CSV PRED_CSV [--data-dir DATA] [--only-predicted]
"""

from __future__ import annotations

import sys

USAGE = """usage: python -m train COMMAND ...

Train, export, evaluate and score the GI-tract SegFormer (train/README.md).

commands:
  fit, validate, test   LightningCLI: train or check a model from a config
                        (python -m train fit --config train/configs/uwmgi.yaml --data.data_dir DATA)
  export                a Lightning checkpoint as the contract checkpoint the app serves
  evaluate              a contract checkpoint on Kaggle-layout data, per case-day and overall
  score                 a Kaggle prediction CSV against a train.csv (.csv or .csv.gz)
  predict               a cohort on one CPU up to many GPUs and nodes (Lightning's Trainer)

python -m train COMMAND --help describes each."""


def main(argv: list[str] | None = None) -> None:
    from model.engines.machine import prefer_sleeping_threads

    prefer_sleeping_threads()  # before the subcommand imports torch
    argv = sys.argv[1:] if argv is None else list(argv)
    command = argv[0] if argv else ""
    if command in ("-h", "--help"):  # LightningCLI's own help would list fit/validate/test/predict only
        print(USAGE)
        return
    if not command:
        print(USAGE, file=sys.stderr)
        raise SystemExit(2)
    if command == "export":
        from .export import main as run
    elif command == "evaluate":
        from .evaluate import evaluate_main as run
    elif command == "score":
        from .evaluate import score_main as run
    elif command == "predict":
        from .predict import main as run
    else:
        from .cli import main as cli_main

        cli_main(argv)
        return
    code = run(argv[1:])
    if code:
        raise SystemExit(code)


if __name__ == "__main__":
    main()
