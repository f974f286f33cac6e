"""A Gradio app shaped like the blog's: ``gr.Image(type="pil")`` in, ``gr.AnnotatedImage`` out.

``python -m benchmarks.reference_app --model DIR [--size 288]``; host and port from Gradio's
env variables. A second endpoint, ``/precomputed``, takes the same input and returns a
precomputed AnnotatedImage value (a 266² slice, 3 masks): pure serving overhead.
"""

from __future__ import annotations

import argparse

import gradio as gr
import numpy as np

from benchmarks import reference


def build(model, size: int) -> gr.Blocks:
    rng = np.random.default_rng(0)
    canned_slice = rng.integers(0, 256, (266, 266, 3), dtype=np.uint8)
    canned_masks = [(rng.random((266, 266)) > 0.8, name) for name in reference.CLASS_NAMES]

    def predict(image):
        ids = reference.predict_labels(model, image, size)
        return image, [(ids == k, name) for k, name in enumerate(reference.CLASS_NAMES, 1)]

    def precomputed(image):
        return canned_slice, canned_masks

    with gr.Blocks() as demo:
        image = gr.Image(type="pil")
        output = gr.AnnotatedImage()
        gr.Button("Submit").click(predict, image, output, api_name="predict")
        gr.Button("Canned", visible=False).click(precomputed, image, output, api_name="precomputed")
    return demo


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--size", type=int, default=288)
    args = parser.parse_args()
    build(reference.load_model(args.model), args.size).launch()
