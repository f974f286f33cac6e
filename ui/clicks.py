"""Click correction on the Scan and Slice tabs: pick an organ and *add* or *remove*, click on the slice.

The page shows the slice in a plain ``gr.Image`` (its ``select`` event gives the pixel), drawn by
:func:`click_image` at an integer zoom :func:`zoom_for`: Gradio 6.31 maps a click to image pixels
with a scale capped at 1, which is right only when the image is shown no larger than it is, so the
image is sent large and the handlers divide by the zoom. Each click replays every click so far on
that slice through :func:`model.interactive.click` (undo is one click fewer).

- **Scan tab.** Clicks stay pending on their slice (the image shows them) until **Apply clicks**
  writes them into the scan as one edit: every download recomputed, the edit log with the clicks,
  the organs SEMIAUTOMATIC. **Propagate** and **Fill between** apply at once, as edits, and **Undo**
  takes the applied edits (the brush editor's Apply edit too) back one at a time, newest first. Clicking on
  another slice drops its pending clicks; an edit applied elsewhere keeps them unless it changed their slice.
- **Slice tab.** Each click updates the masks, the measurements and the mask PNG at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import gradio as gr
import numpy as np
from skimage.draw import disk

from model import interactive, labels
from model.checkpoint import CheckpointError
from model.edits import ScanEdits, Undo, clicks_text
from model.mask_png import save_mask_png

from . import server
from .editor import EditError
from .overlays import ORGAN_CHOICES
from .tables import area_rows

#: The click modes as the page shows them.
ADD, REMOVE = "Add", "Remove"
MODES = [ADD, REMOVE]
#: The shown image is at least this many pixels on its longer side (whole-pixel zoom).
SHOWN_PX = 768
#: Radius of a drawn click, in shown pixels.
MARKER_PX = 5
CLICK_COLOURS = {True: (0, 230, 0), False: (255, 40, 40)}
#: The click images' page style (``{prefix}-click-image``, in the page's ``<head>``): they show no buttons, but
#: Gradio 6.31 still lays its empty button bar (3 x 3 CSS px) over their top-right corner, where it took the
#: clicks meant for the slice's corner pixels; they go through it to the image.
STYLE = "[id$='-click-image'] .icon-button-wrapper { pointer-events: none; }"


#: A pending click: ``(organ index, row, col, positive)``.
OrganClick = tuple[int, int, int, bool]


def click_head() -> str:
    """The click images' part of the page ``<head>``: :data:`STYLE`, and the script (``ui/click_images.js``) that
    keeps a click landing while a redrawn slice image still loads (Gradio 6.31 drops it) and makes it again once
    the image is drawn."""
    script = Path(__file__).with_name("click_images.js").read_text(encoding="utf-8")
    return f"<style>{STYLE}</style>\n<script>\n{script}</script>"


def zoom_for(shape: tuple[int, int]) -> int:
    """The whole-pixel zoom of a slice of ``shape`` ``(H, W)`` in the click image."""
    return max(1, math.ceil(SHOWN_PX / max(shape)))


def click_image(display: np.ndarray, organ_masks: np.ndarray, opacity: float = 0.5,
                clicks: tuple[OrganClick, ...] = ()) -> np.ndarray:
    """``(H·z, W·z, 3) uint8``: the slice ``display`` ``(H, W) uint8`` with ``organ_masks`` ``(O, H, W) bool``
    blended in their colours at ``opacity``, at zoom :func:`zoom_for`, and each click as a green (add) or
    red (remove) dot."""
    alpha = float(np.clip(opacity, 0.0, 1.0))
    rgb = np.repeat(np.asarray(display, dtype=np.float32)[..., None], 3, axis=-1)
    for o, organ in enumerate(labels.ORGANS):
        rgb[organ_masks[o]] = (1 - alpha) * rgb[organ_masks[o]] + alpha * np.array(labels.rgb(organ), np.float32)
    zoom = zoom_for(display.shape)
    shown = np.repeat(np.repeat(np.round(rgb).astype(np.uint8), zoom, axis=0), zoom, axis=1)
    for _, row, col, positive in clicks:
        rr, cc = disk((row * zoom + zoom // 2, col * zoom + zoom // 2), MARKER_PX, shape=shown.shape[:2])
        shown[rr, cc] = CLICK_COLOURS[positive]
    return shown


def organ_index(organ_choice: str) -> int:
    """The index in :data:`model.labels.ORGANS` of a display name (the organ picker's value)."""
    named = labels.organs_named([organ_choice])
    if len(named) != 1:
        raise EditError(f"Pick one organ to correct ({', '.join(ORGAN_CHOICES)}); got {organ_choice!r}.")
    return labels.ORGANS.index(named[0])


def clicked_pixel(evt: gr.SelectData | None, shape: tuple[int, int]) -> tuple[int, int]:
    """``(row, col)`` of the slice pixel under a click on the click image; :class:`EditError` outside it.

    ``evt`` is ``None`` when the handler is called without the click's event data (the browser always
    sends it; a hand-made request may not): the same one-line error, not a missing-argument traceback.
    """
    index = getattr(evt, "index", None)
    try:
        x, y = (int(v) for v in index)
    except (TypeError, ValueError):
        raise EditError("That click is outside the slice; click on the slice's image.") from None
    zoom = zoom_for(shape)
    row, col = y // zoom, x // zoom
    if not (0 <= row < shape[0] and 0 <= col < shape[1]) or x < 0 or y < 0:
        raise EditError(f"That click is outside the slice ({shape[1]}×{shape[0]} px); click on the slice's image.")
    return row, col


def replay(image: np.ndarray, probabilities: np.ndarray | None, before: np.ndarray,
           clicks: tuple[OrganClick, ...]) -> np.ndarray:
    """``(O, H, W) bool``: ``before`` ``(O, H, W) bool`` after ``clicks``, each organ by its own clicks through
    :func:`model.interactive.click` (the other organs as they were before: organs may overlap)."""
    try:
        refiner = server.MODEL.click_refiner()
    except CheckpointError as err:
        raise gr.Error(f"Click correction is not available: {err}") from None
    masks = before.copy()
    for o in sorted({c[0] for c in clicks}):
        probability = None if probabilities is None else probabilities[o].astype(np.float32)
        others = np.delete(before, o, axis=0).any(axis=0)
        masks[o] = interactive.click(image, probability, before[o], [c[1:] for c in clicks if c[0] == o], others,
                                     refiner=refiner)
    return masks


def _per_organ_text(clicks: tuple[OrganClick, ...]) -> dict[str, str]:
    return {labels.ORGANS[o]: clicks_text([c[1:] for c in clicks if c[0] == o]) for o in {c[0] for c in clicks}}


# --------------------------------------------------------------------------- the Scan tab


#: How many applied edits Undo can take back, newest first.
MAX_UNDO = 20


@dataclass(frozen=True)
class ScanClicks:
    """The Scan tab's click state: the scan it was drawn for (its token), the slice (0-based) and its
    masks ``(O, H, W) bool`` when the pending clicks started, the clicks, the applied edits Undo can take
    back (``undo``: click edits, propagations, fills and brush edits, oldest first, each a
    :class:`model.edits.Undo` and what it was), and what was just undone (``undone``)."""

    token: str | None = None
    slice_index: int | None = None
    before: np.ndarray | None = None
    clicks: tuple[OrganClick, ...] = ()
    undo: tuple[tuple[Undo, str], ...] = ()
    undone: str = ""

    def __post_init__(self):
        if self.undo and self.token is not None:  # the undo steps hold slices of their own, counted with the scan
            from .scan_tab import KEPT

            KEPT.attach(self.token, self, sum(step.nbytes for step, _ in self.undo))

    def release(self) -> None:
        """Drop the undo steps (their scan was released to keep the server's memory bounded, :mod:`ui.kept`)."""
        object.__setattr__(self, "undo", ())


def _scan_state(state):
    from .scan_tab import _scan_state as current

    return current(state, "click on its slices")


def _slice_at(state, position) -> int:
    return int(np.clip(int(position or 1) - 1, 0, len(state.scan) - 1))


def _pending(state, clicks: ScanClicks | None, index: int) -> ScanClicks | None:
    """``clicks`` when they are pending on slice ``index`` of this scan and its masks have not changed since."""
    if (clicks and clicks.clicks and clicks.token == state.token and clicks.slice_index == index
            and np.array_equal(clicks.before, state.organ_masks[:, index])):
        return clicks
    return None


def _pending_masks(state, pending: ScanClicks | None, index: int) -> np.ndarray:
    if pending is None:
        return state.organ_masks[:, index]
    probabilities = None if state.edits.probabilities is None else state.edits.probabilities[:, index]
    return replay(state.scan.voxels[index], probabilities, pending.before, pending.clicks)


def scan_click_view(state, clicks: ScanClicks | None, position=1, opacity=0.5):
    """The click image of slice ``position`` (1-based) with its pending clicks, and the click state (now
    bound to this scan)."""
    if not state:
        return None, clicks or ScanClicks()
    index = _slice_at(state, position)
    pending = _pending(state, clicks, index)
    image = click_image(state.scan.display_slice(index), _pending_masks(state, pending, index), opacity,
                        pending.clicks if pending else ())
    kept = clicks if clicks and clicks.token == state.token else ScanClicks(state.token)
    return image, kept


def scan_click_start(state, clicks: ScanClicks | None, position=1, opacity=0.5):
    """After a scan is segmented: its click image, the click state bound to it and the click note, which no longer
    speaks of the clicks or the Undo steps of the scan before it (they are gone with it)."""
    image, kept = scan_click_view(state, clicks, position, opacity)
    return image, kept, _pending_note(kept)


def scan_click_redraw(state, clicks: ScanClicks | None, position=1, opacity=0.5):
    """The click image alone (the slider's and the opacity's redraw). It leaves the click state as it is: a
    click that lands while a redraw runs must not be overwritten by the state the redraw read before it."""
    return scan_click_view(state, clicks, position, opacity)[0]


def scan_click(state, clicks: ScanClicks | None, position, organ_choice, mode, opacity, evt: gr.SelectData = None):
    """One click on the Scan tab's click image: the image with the organ's new mask, the click state, a note."""
    with server.user_errors("a click", "The click could not be applied; click again."):
        state = _scan_state(state)
        if clicks is not None and clicks.token not in (None, state.token):
            raise EditError("That click was on a scan that has been replaced; click on the new scan's slice.")
        index = _slice_at(state, position)
        row, col = clicked_pixel(evt, state.scan.shape[1:])
        organ = organ_index(organ_choice)
        pending = _pending(state, clicks, index)
        dropped = len(clicks.clicks) if clicks and clicks.clicks and pending is None else 0
        base = clicks if clicks and clicks.token == state.token else ScanClicks(state.token)
        session = replace(base, slice_index=index, before=state.organ_masks[:, index].copy(), undone="",
                          clicks=((pending.clicks if pending else ()) + ((organ, row, col, mode != REMOVE),)))
        masks = _pending_masks(state, session, index)
    if dropped:
        gr.Warning(f"{_clicks_dropped(dropped, clicks.slice_index)}.")
    return (click_image(state.scan.display_slice(index), masks, opacity, session.clicks), session,
            _pending_note(session))


def _clicks_dropped(n: int, index: int) -> str:
    return f"{n} click{'s' if n != 1 else ''} not applied on slice {index + 1} {'were' if n != 1 else 'was'} dropped"


def _pending_note(clicks: ScanClicks) -> str:
    n = len(clicks.clicks)
    if not n:
        if clicks.undone:
            more = f" **Undo** again takes back {clicks.undo[-1][1]}" if clicks.undo else ""
            return f"Undone: {clicks.undone}{more}"
        return f"Applied: {clicks.undo[-1][1]} **Undo** takes it back." if clicks.undo else ""
    return (f"{n} click{'s' if n != 1 else ''} on slice {clicks.slice_index + 1}, not applied yet: "
            "**Apply clicks** keeps them, **Undo** takes back the last.")


def undo_scan_click(state, clicks: ScanClicks | None, position=1, opacity=0.5, organs=ORGAN_CHOICES):
    """Undo: the last pending click; with none pending, the last applied click edit, propagation, fill or brush
    edit not yet undone (the scan goes back to before it and every download is written again; up to
    :data:`MAX_UNDO` of them, newest first). Returns the Scan tab's outputs (:func:`ui.scan_tab.scan_view`),
    then the click image, state and note."""
    from .scan_tab import ScanState, scan_view

    with server.user_errors("undo", "Nothing could be undone; segment the scan again."):
        state = _scan_state(state)
        clicks = clicks if clicks and clicks.token == state.token else ScanClicks(state.token)
        index = _slice_at(state, position)
        if _pending(state, clicks, index) is not None or clicks.clicks:
            session = replace(clicks, clicks=clicks.clicks[:-1])
            if session.slice_index != index:
                raise EditError(f"The pending clicks are on slice {session.slice_index + 1}; go to it to undo them.")
            image, session = scan_click_view(state, session, position, opacity)
            return (*(gr.skip(),) * 11, image, session, _pending_note(session))
        if not clicks.undo:
            raise EditError("Nothing to undo: no pending clicks, and no applied clicks, propagation, fill or brush "
                            f"edit left to take back (Undo goes back {MAX_UNDO} at most).")
        step, what = clicks.undo[-1]
        if not step.fits(state.edits):
            raise EditError("Nothing to undo: the scan was changed in another way since; segment it again to start "
                            "over.")
        edits, result = step.back(state.edits).write(server.scratch_dir())
    state = ScanState(edits, state.truth, state.token)
    view = scan_view(result, state, [], opacity, organs, index + 1)
    session = ScanClicks(state.token, undo=clicks.undo[:-1], undone=what)
    image, session = scan_click_view(state, session, index + 1, opacity)
    return (*view, image, session, _pending_note(session))


def _still_pending(state, clicks: ScanClicks | None) -> ScanClicks:
    """The click state of ``state``, just edited: clicks pending on a slice the edit left as it was stay pending;
    those on a slice it changed are dropped, and a warning says so."""
    if not (clicks and clicks.clicks and clicks.token == state.token):
        return ScanClicks(state.token)
    if np.array_equal(clicks.before, state.organ_masks[:, clicks.slice_index]):
        return ScanClicks(state.token, clicks.slice_index, clicks.before, clicks.clicks)
    gr.Warning(f"{_clicks_dropped(len(clicks.clicks), clicks.slice_index)}: the edit changed that slice.")
    return ScanClicks(state.token)


def _applied(state, before: ScanEdits, done, what: str, opacity, organs, position, clicks: ScanClicks | None,
             pending: bool = True):
    """The Scan tab's outputs after an applied click edit, propagation, fill or brush edit, then the click ones;
    Undo goes back to ``before`` (:func:`_click_outputs_after`)."""
    from .scan_tab import ScanState, scan_view

    edits, result = done
    new_state = ScanState(edits, state.truth, state.token)
    return (*scan_view(result, new_state, [], opacity, organs, position),
            *_click_outputs_after(new_state, before, what, clicks, position, opacity, pending))


def _undo_steps(state, clicks: ScanClicks | None) -> tuple[tuple[Undo, str], ...]:
    """The undo steps of ``clicks`` when they belong to ``state``'s scan."""
    return clicks.undo if clicks and clicks.token == state.token else ()


def _click_outputs_after(state, before: ScanEdits, what: str, clicks: ScanClicks | None, position, opacity,
                         pending: bool = True):
    """The click image, state and note of ``state`` just edited from ``before``: Undo's newest step goes back to
    ``before``; with ``pending``, clicks pending on another slice stay pending where the edit left that slice as it
    was (:func:`_still_pending`; without, they were just applied). The note says ``what`` was applied, and which
    clicks are still pending."""
    steps = (*_undo_steps(state, clicks), (Undo.between(before, state.edits), what))[-MAX_UNDO:]
    session = replace(_still_pending(state, clicks) if pending else ScanClicks(state.token), undo=steps)
    image, session = scan_click_view(state, session, position, opacity)
    note = _pending_note(replace(session, clicks=()))
    return image, session, f"{note}\n\n{_pending_note(session)}" if session.clicks else note


def apply_scan_brush(state, clicks: ScanClicks | None, editor_state, value, opacity=0.5, organs=ORGAN_CHOICES):
    """Apply edit (the brush editor's layers, :func:`ui.scan_tab.apply_scan_edit`) as a step Undo takes back, as
    it does applied clicks; clicks pending on other slices stay. The Scan tab's outputs, then the click ones."""
    from .scan_tab import ScanState, apply_scan_edit

    out = apply_scan_edit(state, editor_state, value, opacity, organs)
    if not isinstance(out[9], ScanState):  # nothing changed: nothing to undo either
        return (*out, gr.skip(), gr.skip(), gr.skip())
    index = editor_state.slice_index
    return (*out, *_click_outputs_after(out[9], state.edits, f"the brush edit on slice {index + 1}.", clicks,
                                        index + 1, opacity))


def apply_scan_clicks(state, clicks: ScanClicks | None, position=1, opacity=0.5, organs=ORGAN_CHOICES):
    """Apply the pending clicks of the slider's slice as one edit; the Scan tab's outputs, then the click ones."""
    with server.user_errors("applying clicks", "The clicks could not be applied; click again."):
        state = _scan_state(state)
        index = _slice_at(state, position)
        pending = _pending(state, clicks, index)
        if pending is None:
            raise EditError("No clicks to apply on this slice: pick an organ and Add or Remove, then click on it.")
        masks = _pending_masks(state, pending, index)
        done = state.edits.apply(index, masks, server.scratch_dir(), tool="click", clicks=_per_organ_text(pending.clicks))
    if done is None:
        gr.Info("The clicks changed nothing on this slice.")
        unchanged = ScanClicks(state.token, undo=_undo_steps(state, clicks))
        return (*(gr.skip(),) * 11, *scan_click_view(state, unchanged, position, opacity), "")
    return _applied(state, state.edits, done, f"{_clicks_what(pending, index)}.", opacity, organs, index + 1, clicks,
                    pending=False)


def _clicks_what(pending: ScanClicks, index: int) -> str:
    """The pending clicks of slice ``index``, as the note and Undo name them once applied."""
    organs_clicked = ", ".join(labels.DISPLAY_NAMES[labels.ORGANS[o]] for o in sorted({c[0] for c in pending.clicks}))
    return f"{len(pending.clicks)} click(s) on slice {index + 1} ({organs_clicked})"


def _after_clicks(pending: ScanClicks | None, clicked, index: int, what: str) -> str:
    """``what`` a propagation or fill did, after the clicks pending on its slice when they were applied first (one
    edit, one Undo step: the note says Undo takes back both)."""
    return f"{_clicks_what(pending, index)}, then {what[0].lower()}{what[1:]}" if clicked else what


def _with_pending_applied(state, clicks: ScanClicks | None, index: int):
    """The slice's pending clicks applied first (a person propagates the fix they see): ``(edits, result)``,
    or ``None`` when there were none or they changed nothing."""
    pending = _pending(state, clicks, index)
    if pending is None:
        return None
    return state.edits.apply(index, _pending_masks(state, pending, index), server.scratch_dir(), tool="click",
                             clicks=_per_organ_text(pending.clicks))


def _nothing_done(state, clicks, before: ScanEdits, clicked, message: str, opacity, organs, position):
    """No edit from a propagation or fill: a note; the pending clicks applied on the way still land."""
    gr.Info(message)
    if clicked is None:
        return (*(gr.skip(),) * 11, *scan_click_view(state, clicks, position, opacity), gr.skip())
    return _applied(state, before, clicked, f"the clicks on slice {position}. {message}", opacity, organs, position,
                    clicks, _elsewhere(state, clicks, position - 1))


def _elsewhere(state, clicks: ScanClicks | None, index: int) -> bool:
    """Whether ``clicks`` are pending elsewhere than slice ``index`` (a propagation or fill from it applies the
    clicks pending there first), so an edit from it may leave them pending."""
    return _pending(state, clicks, index) is None


def _runs(indices: list[int]) -> str:
    """Slice numbers (1-based) of 0-based ``indices`` as runs: ``3–5, 9``."""
    runs, start = [], None
    for i, d in enumerate(indices):
        if start is None:
            start = d
        if i + 1 == len(indices) or indices[i + 1] != d + 1:
            runs.append(f"{start + 1}" if start == d else f"{start + 1}–{d + 1}")
            start = None
    return ", ".join(runs)


def propagate_scan(state, clicks: ScanClicks | None, position, organ_choice, opacity=0.5, organs=ORGAN_CHOICES):
    """Propagate: re-propose the organ on the slices above and below the slider's corrected slice
    (:func:`model.interactive.propagate`), leaving the slices corrected by hand as they are, and apply the
    proposal as one edit (Undo takes it back)."""
    with server.user_errors("propagation", "The propagation failed; correct the slice again and retry."):
        state = _scan_state(state)
        index, organ = _slice_at(state, position), organ_index(organ_choice)
        name = labels.ORGANS[organ]
        before = state.edits
        pending = _pending(state, clicks, index)
        clicked = _with_pending_applied(state, clicks, index)
        edits = clicked[0] if clicked else before
        if index not in edits.corrected(name):
            raise EditError(f"Nothing to propagate: the {labels.DISPLAY_NAMES[name].lower()} on slice {index + 1} has "
                            "not been corrected. Correct it (clicks or the editor, then Apply), then Propagate.")
        if not edits.organ_masks[organ, index].any() and not edits.predicted_slice(index)[organ].any():
            raise EditError(f"Nothing to propagate: slice {index + 1} has no {labels.DISPLAY_NAMES[name].lower()}, "
                            "and the model drew none there to remove.")
        # The slices the person corrected by hand (clicks, the brush) are theirs: not changed (the carry goes past).
        proposed = interactive.propagate(state.scan.voxels, edits.probabilities, edits.organ_masks, organ, index,
                                         before=edits.predicted_slice(index)[organ],
                                         kept=edits.corrected(name, tools=("brush", "click")))
        changed = [int(d) for d in np.flatnonzero((proposed[organ] != edits.organ_masks[organ]).any(axis=(1, 2)))]
        done = edits.apply_slices({d: proposed[:, d] for d in changed}, server.scratch_dir(), tool="propagate")
    if done is None:
        return _nothing_done(state, clicks, before, clicked, f"The propagation from slice {index + 1} proposed no "
                             "change on the slices around it.", opacity, organs, index + 1)
    what = (f"{labels.DISPLAY_NAMES[name]} propagated from slice {index + 1} to slice{'s' if len(changed) > 1 else ''} "
            f"{_runs(changed)}; look at them.")
    return _applied(state, before, done, _after_clicks(pending, clicked, index, what), opacity, organs, index + 1,
                    clicks, _elsewhere(state, clicks, index))


def _fill_ends(index: int, drawn: list[int]) -> list[tuple[int, int]]:
    """The pairs of consecutive slices of ``drawn`` (ascending) that Fill between fills from slice ``index``: the
    pair around it when it lies between two, else the pairs on either side of it when it is one of them."""
    below, above = [d for d in drawn if d < index], [d for d in drawn if d > index]
    if index in drawn:
        return [*([(below[-1], index)] if below else []), *([(index, above[0])] if above else [])]
    return [(below[-1], above[0])] if below and above else []


def fill_between_scan(state, clicks: ScanClicks | None, position, organ_choice, opacity=0.5, organs=ORGAN_CHOICES):
    """Fill between: the organ interpolated (:func:`model.interactive.fill_between`) on the slices between the
    slider's slice and the corrected slices next to it that show the organ (or between the two around it), applied
    as one edit (Undo takes it back). Only around the slider: a fill elsewhere (one a person undid, say) is not
    made again."""
    with server.user_errors("fill between", "The fill failed; correct the slices again and retry."):
        state = _scan_state(state)
        index, organ = _slice_at(state, position), organ_index(organ_choice)
        name, shown = labels.ORGANS[organ], labels.DISPLAY_NAMES[labels.ORGANS[organ]].lower()
        before = state.edits
        pending = _pending(state, clicks, index)
        clicked = _with_pending_applied(state, clicks, index)
        edits = clicked[0] if clicked else before
        corrected = edits.corrected(name)
        drawn = [d for d in corrected if edits.organ_masks[organ, d].any()]
        if len(corrected) < 2:
            raise EditError(f"Fill between needs the {shown} corrected on two slices; it is on "
                            f"{len(corrected)} ({_runs(corrected) or 'none'}). Correct another slice, then fill.")
        if len(drawn) < 2:
            raise EditError(f"Fill between interpolates the {shown} between two corrected slices that show it: it was "
                            f"corrected on {_runs(corrected)}, and shows on {_runs(drawn) or 'none of them'}.")
        ends = _fill_ends(index, drawn)
        if not ends:
            raise EditError(f"Slice {index + 1} is not between two slices where the {shown} was corrected and shows "
                            f"({_runs(drawn)}); move the slider to one of them, or between two, then fill.")
        gaps = [(a, b) for a, b in ends if b - a > 1]
        if not gaps:
            raise EditError(f"No slice lies between slice {index + 1} and the corrected slices next to it "
                            f"({_runs(sorted({d for pair in ends for d in pair}))}).")
        masks = edits.organ_masks
        for a, b in gaps:
            masks = interactive.fill_between(masks, organ, a, b)
        filled = [d for a, b in gaps for d in range(a + 1, b)]
        done = edits.apply_slices({d: masks[:, d] for d in filled}, server.scratch_dir(), tool="fill_between")
    if done is None:
        return _nothing_done(state, clicks, before, clicked, "The fill changed nothing: the slices between already "
                             "hold the interpolated organ.", opacity, organs, index + 1)
    what = (f"{labels.DISPLAY_NAMES[name]} filled on slices {_runs(filled)} between the corrected slices "
            f"{_runs(sorted({d for pair in gaps for d in pair}))}.")
    return _applied(state, before, done, _after_clicks(pending, clicked, index, what), opacity, organs, index + 1,
                    clicks, _elsewhere(state, clicks, index))


# --------------------------------------------------------------------------- the Slice tab


@dataclass(frozen=True)
class SliceClicks:
    """The Slice tab's clicks: the slice's token, its masks ``(O, H, W) bool`` before and after them, the clicks."""

    token: str
    before: np.ndarray
    after: np.ndarray
    clicks: tuple[OrganClick, ...] = ()


def _current(state, session: SliceClicks | None) -> bool:
    """Whether ``session``'s clicks made ``state``'s masks (not another slice, nor an edit since)."""
    return bool(session and session.token == state.token and np.array_equal(session.after, state.organ_masks))


def slice_click_view(state, session: SliceClicks | None = None, opacity=0.5):
    """The Slice tab's click image of the segmented slice with the clicks that made its masks, or nothing."""
    if not state:
        return None
    return click_image(state.display, state.organ_masks, opacity, session.clicks if _current(state, session) else ())


def _slice_outputs(state, masks: np.ndarray, session: SliceClicks | None, opacity, organs, show_confidence):
    from .slice_tab import render

    state = replace(state, organ_masks=masks)
    mask_path = save_mask_png(masks, server.scratch_dir() / f"{state.name}_masks.png")
    return (render(state, opacity, organs, show_confidence), area_rows(masks, state.spacing_mm), str(mask_path), state,
            session, click_image(state.display, masks, opacity, session.clicks if session else ()))


def slice_click(state, session: SliceClicks | None, organ_choice, mode, opacity, organs, show_confidence,
                evt: gr.SelectData = None):
    """One click on the Slice tab: the overlay, measurements, mask PNG, state, click state and click image."""
    with server.user_errors("a click", "The click could not be applied; click again."):
        if not state:
            raise EditError("No slice: segment a slice first, then click on it.")
        row, col = clicked_pixel(evt, state.display.shape)
        organ = organ_index(organ_choice)
        # The clicks go on from the last ones unless the masks changed since (another slice, or the editor).
        session = session if _current(state, session) else SliceClicks(state.token, state.organ_masks.copy(),
                                                                       state.organ_masks)
        clicks = (*session.clicks, (organ, row, col, mode != REMOVE))
        masks = replay(state.display, state.probabilities, session.before, clicks)
        session = replace(session, after=masks, clicks=clicks)
    return _slice_outputs(state, masks, session, opacity, organs, show_confidence)


def undo_slice_click(state, session: SliceClicks | None, opacity=0.5, organs=ORGAN_CHOICES, show_confidence=False):
    """Take back the Slice tab's last click."""
    with server.user_errors("undo", "Nothing could be undone."):
        if not state:
            raise EditError("No slice: segment a slice first, then click on it.")
        if not (_current(state, session) and session.clicks):
            raise EditError("No click to undo on this slice.")
        clicks = session.clicks[:-1]
        masks = replay(state.display, state.probabilities, session.before, clicks)
        session = replace(session, after=masks, clicks=clicks)
    return _slice_outputs(state, masks, session, opacity, organs, show_confidence)
