"""The engines that run the model, and the one loader that picks one (no Gradio, no Lightning).

- ``base.py``: :class:`~model.engines.base.SegmenterBase`, the one predict template and the volume
  verbs (``segment_scan``) every engine shares; numpy, imported lazily.
- ``torch.py``: the torch engine (:class:`~model.engines.torch.Segmenter`, precisions, the folded decode head).
- ``openvino.py``: the OpenVINO engine (the folded model converted once and cached; serves without torch).
- ``process.py``: the model in its own process (``python app.py``), a segmenter on the same base.
- ``choose.py``: which engine runs here, and :func:`~model.engines.choose.load_segmenter`.
- ``machine.py``: the machine facts: CPU flags, a GPU, the precision variables, thread settings.
- ``click_refiner.py``: the learned click corrector (a small U-Net; :func:`model.interactive.click` runs it).

The only package that imports torch or OpenVINO when serving. This file imports nothing.
"""
