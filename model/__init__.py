"""Inference package for the UW-Madison GI tract segmentation app (no Gradio, no Lightning).

Research demo, not for diagnostic use.
"""
