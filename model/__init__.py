"""Inference package for the UW-Madison GI tract segmentation app (no Gradio, no Lightning).

Research demo, not for diagnostic use.
"""

#: The package version, written into the DICOM exports (SoftwareVersions, the algorithm version).
__version__ = "0.6.0"
