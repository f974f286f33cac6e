// A click on a click image (ui/clicks.py) that lands while the slice's image is still loading is kept, and
// made again once the new image is drawn.
//
// Every redraw of a click image (the slider, the opacity, a click's or an Undo's answer) swaps its source.
// Until the new image has loaded, Chromium reports its natural size as 0, and Gradio 6.31's select handler,
// which maps a click through that size, then sends no select event at all: the click was lost without a
// word. This script (put in the page's <head> by ui/clicks.py) catches such a click before Gradio sees it and
// dispatches it again when the image loads, at the same place in the image (the page may have moved
// meanwhile). The new image is a slice of the same scan at the same zoom, and the page reads the slider when
// the click reaches Gradio, as for any click. If the image fails to load, the click is dropped, never made
// later on another image.
document.addEventListener("click", (event) => {
  const frame = event.target instanceof Element && event.target.closest("[id$='-click-image'] button");
  const image = frame && frame.querySelector("img");
  if (!image || image.complete || image.naturalWidth > 0) return;  // drawn, or broken: Gradio's as ever
  event.stopImmediatePropagation();
  const box = image.getBoundingClientRect();
  const x = event.clientX - box.left, y = event.clientY - box.top;
  const settled = new AbortController();
  image.addEventListener("load", () => {
    settled.abort();
    const now = image.getBoundingClientRect();
    image.dispatchEvent(new MouseEvent("click", { bubbles: true, cancelable: true,
                                                  clientX: now.left + x, clientY: now.top + y }));
  }, { signal: settled.signal });
  image.addEventListener("error", () => settled.abort(), { signal: settled.signal });
}, true);
