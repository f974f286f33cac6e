"""Lightning training for the slice segmenter: ``python -m train {fit,validate,export,evaluate,score}``.

Imports :mod:`model` (labels, intensity, RLE, metric, checkpoint contract); :mod:`model` never
imports this package. See ``train/README.md``.
"""
