"""``python -m model.convert [SRC] DST``: the Space's original weights → a contract checkpoint.

With no SRC the blog's weights are downloaded from the Space and their sha256 is checked
before unpickling; for a local SRC it is checked only with ``--sha256 HEX``.

``--openvino`` also builds the cached OpenVINO model (:mod:`model.engines.openvino`) of DST, so
the first start of the app or of ``python -m model.predict`` does not pay the conversion. With no
paths it builds it for ``--model`` (else ``MODEL``, else the blog's checkpoint).
"""

from __future__ import annotations

import argparse
import sys

from . import checkpoint as ckpt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.convert", description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", metavar="[SRC] DST", help="original-layout folder (optional) and output folder")
    parser.add_argument("--sha256", help="expected sha256 of SRC/pytorch_model.bin; refuse on mismatch")
    parser.add_argument("--revision", help="Space revision to download when SRC is omitted")
    parser.add_argument("--openvino", action="store_true",
                        help="also build the cached OpenVINO model (of DST; with no paths, of --model)")
    parser.add_argument("--model", help="with --openvino and no paths: Hub repo id or checkpoint dir (env MODEL)")
    args = parser.parse_args(argv)
    if len(args.paths) > 2 or (not args.paths and not args.openvino):
        parser.error("expected [SRC] DST, or --openvino [--model ID_OR_DIR]")
    target = None
    try:
        if args.paths:
            if len(args.paths) == 1:
                src, sha = ckpt.download_default(args.revision), args.sha256 or ckpt.DEFAULT_SHA256
            else:
                src, sha = args.paths[0], args.sha256
            target = ckpt.convert_original(src, args.paths[-1], sha256=sha)
            print(f"wrote contract checkpoint to {target}")
        else:
            target = ckpt.model_choice(args.model)[0]
        if args.openvino:
            from .engines.openvino import OpenVinoSegmenter, cache_dir

            segmenter = OpenVinoSegmenter.load(target)
            print(f"OpenVINO model cached in {cache_dir(segmenter.info, segmenter.contract)}")
    except ckpt.CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except Exception as err:  # noqa: BLE001 - the download's own errors, e.g. offline
        print(f"error: could not convert ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
