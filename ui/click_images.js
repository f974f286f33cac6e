// A click on a click image (ui/clicks.py) that lands while the slice's image is still loading is kept, and
// made again once the new image is drawn.
//
// Moving the slider (or the opacity) swaps the click image's source. Until the new image has loaded,
// Chromium reports its natural size as 0, and Gradio 6.31's select handler, which maps a click through that
// size, then sends no select event at all: the click was lost without a word. This script (put in the
// page's <head> by ui/clicks.py) catches such a click before Gradio sees it and dispatches it again, at the
// same point of the screen, when the image loads. The new image is a slice of the same scan at the same
// zoom, and the page reads the slider when the click reaches Gradio, as for any click.
document.addEventListener("click", (event) => {
  const frame = event.target instanceof Element && event.target.closest("[id$='-click-image'] button");
  const image = frame && frame.querySelector("img");
  if (!image || image.complete || image.naturalWidth > 0) return;  // drawn, or broken: Gradio's as ever
  event.stopImmediatePropagation();
  const { clientX, clientY } = event;
  image.addEventListener("load", () => image.dispatchEvent(
    new MouseEvent("click", { bubbles: true, cancelable: true, clientX, clientY })), { once: true });
}, true);
