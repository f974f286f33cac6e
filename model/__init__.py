"""Inference package for the UW-Madison GI tract segmentation app (no Gradio, no Lightning).

Research demo, not for diagnostic use. The Python API for scripts outside this repository::

    from model import load_scan, load_segmenter, labels

    segmenter = load_segmenter()          # or load_segmenter("DIR" or "owner/name", revision)
    scan = load_scan(["case1_day2.nii.gz"])  # slices, a zip, NIfTI or a DICOM series
    organ_masks = segmenter.segment_scan(scan).run().organ_masks  # (O, D, H, W) bool
    dict(zip(labels.ORGANS, organ_masks))    # stomach, small bowel, large bowel

- :func:`load_segmenter` (:func:`model.engines.choose.load_segmenter`): the checkpoint on the
  engine this machine runs best (torch or OpenVINO).
- :func:`load_scan` (:func:`model.scans.load_scan`): any scan format, as a :class:`model.scans.Scan`.
- :mod:`model.labels`: organ names, label ids and colours.

The names load on first use, so ``import model`` alone imports nothing heavy (``python app.py``
imports this package before it forks the model's process).
"""

#: The package version, written into the DICOM exports (SoftwareVersions, the algorithm version).
__version__ = "0.6.0"

__all__ = ["labels", "load_scan", "load_segmenter"]


#: The API's names and the modules they live in, imported on first use (PEP 562).
_API = {"load_segmenter": "model.engines.choose", "load_scan": "model.scans", "labels": "model.labels"}


def __getattr__(name: str):
    # By module name: this package is initialised before any of them is imported, so they may
    # import from it (dicom/codes.py reads __version__); "from . import labels" would call this again.
    if name not in _API:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    module = importlib.import_module(_API[name])
    return module if name == "labels" else getattr(module, name)
