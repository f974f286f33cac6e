"""Decoding uploaded slices and the one intensity function shared by serving and training.

Gradio's default image input converts to 8-bit RGB and so clips the 16-bit Kaggle
scans (gradio issue #2849). Everything here keeps the file's own bit depth until
:func:`normalize_intensity` stretches it.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: Largest slice we decode, in pixels (a guard against decompression bombs).
#: Real MRI slices are at most ~1024²; 4096² leaves a wide margin.
MAX_PIXELS = 4096 * 4096
#: Smallest side we accept: SegFormer downsamples by 32, and anything this small is not a scan.
MIN_SIDE = 16
#: Spacing assumed when neither the file name nor the user gives one (the dataset's usual value).
DEFAULT_PIXEL_SPACING_MM = 1.5
#: File suffixes read as slice images (a scan's slices, the app's examples, mask PNGs).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")

_KAGGLE_NAME = re.compile(
    r"slice_(?P<slice>\d+)_(?P<width>\d+)_(?P<height>\d+)_(?P<pw>\d+(?:\.\d+)?)_(?P<ph>\d+(?:\.\d+)?)"
)


class ImageError(ValueError):
    """A slice that cannot be segmented. ``str(err)`` is one line a person can act on."""


@dataclass(frozen=True)
class KaggleSliceName:
    """What a Kaggle scan name ``slice_NNNN_W_H_PW_PH.png`` says (width before height)."""

    slice_number: int
    width: int
    height: int
    pixel_spacing_mm: tuple[float, float]  # (row spacing PH, column spacing PW), i.e. (y, x)


def parse_kaggle_name(name: str | Path) -> KaggleSliceName | None:
    """Parse a Kaggle slice file name; ``None`` if it does not follow the pattern."""
    match = _KAGGLE_NAME.search(Path(name).name)
    if match is None:
        return None
    pw, ph = float(match["pw"]), float(match["ph"])
    if pw <= 0 or ph <= 0:
        return None
    return KaggleSliceName(int(match["slice"]), int(match["width"]), int(match["height"]), (ph, pw))


def normalize_intensity(image: np.ndarray) -> np.ndarray:
    """Per-image min–max stretch to 0..255, the blog's training preprocessing.

    ``image``: any shape, any integer or float dtype (e.g. ``(H, W) uint16`` or a
    2.5D stack ``(C, H, W)``, stretched jointly). Returns the same shape as ``uint8``.
    Non-finite pixels count as the smallest finite value; a constant image maps to 0
    (callers that need to refuse it use :func:`check_slice`). Rounds to nearest, so an
    8-bit slice and its 16-bit copy (``x * 257``) give the same result.
    """
    with np.errstate(over="ignore"):  # long doubles beyond float64 become inf: non-finite, as below
        values = np.asarray(image, dtype=np.float64)
    finite = np.isfinite(values)
    if not finite.all():
        fill = values[finite].min() if finite.any() else 0.0
        values = np.where(finite, values, fill)
    lo, hi = (values.min(), values.max()) if values.size else (0.0, 0.0)
    if hi <= lo:
        return np.zeros(values.shape, dtype=np.uint8)
    with np.errstate(over="ignore"):  # both overflows are caught just below
        span = hi - lo
        if not np.isfinite(span):  # e.g. -1e308..1e308: halve first (exact here) so the span fits in float64
            values, lo, span = values / 2, lo / 2, hi / 2 - lo / 2
        scale = 255.0 / span
    if np.isfinite(scale):
        scaled = (values - lo) * scale
    else:  # a subnormal span: 255 / span overflows, so divide instead (0 * inf would be NaN)
        scaled = (values - lo) / span * 255.0
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def check_slice(image: np.ndarray, allow_flat: bool = False) -> None:
    """Raise :class:`ImageError` for slices the model cannot meaningfully segment.

    ``image``: ``(H, W)`` numeric. ``allow_flat`` accepts a constant slice (a blank slice
    inside a scan is normal; a blank single upload is not).
    """
    if image.ndim != 2:
        raise ImageError(f"Expected a single 2-D slice, got an array of shape {image.shape}.")
    h, w = image.shape
    if min(h, w) < MIN_SIDE:
        raise ImageError(
            f"The image is {w}×{h} pixels; a slice must be at least {MIN_SIDE} pixels on each side."
        )
    if h * w > MAX_PIXELS:
        raise ImageError(f"The image is {w}×{h} pixels, over the {MAX_PIXELS:,}-pixel limit.")
    if allow_flat:
        return
    finite = np.isfinite(image) if np.issubdtype(image.dtype, np.floating) else None
    values = image[finite] if finite is not None else image
    if values.size == 0:
        raise ImageError("The image has no finite pixel values (all NaN or infinite); there is nothing to segment.")
    if values.min() == values.max():
        raise ImageError("The image has a single flat intensity (min == max); there is nothing to segment.")


#: File signatures, to tell a damaged or unsupported image from a file that is no image at all.
_MAGIC = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG", b"II*\x00": "TIFF", b"MM\x00*": "TIFF",
          b"BM": "BMP", b"GIF8": "GIF"}


def _sniff(path: Path) -> str | None:
    with open(path, "rb") as fh:
        head = fh.read(8)
    return next((fmt for magic, fmt in _MAGIC.items() if head.startswith(magic)), None)


def read_slice(path: str | Path, allow_flat: bool = False) -> np.ndarray:
    """Decode one slice file to a greyscale array ``(H, W)``, keeping its bit depth.

    PNG (8/16 bit), JPEG, TIFF, BMP, GIF; grey, RGB(A), palette and CMYK modes. Multi-frame
    files (animated GIF/APNG, multipage TIFF) give their first frame; EXIF orientation is
    honoured. Colour images become luma (ITU-R 601) as float32; 16-bit colour PNGs arrive at
    8 bits per channel (Pillow's limit). A PNG whose chunk checksums fail is refused. NaN and
    inf pixels of float TIFFs are kept here and count as background in :func:`normalize_intensity`.
    Raises :class:`ImageError` with a one-line reason otherwise; messages name the file, never
    the server's folders.
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise ImageError(f"{path.name} is empty (0 bytes).")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w * h > MAX_PIXELS:
                    raise ImageError(f"{path.name} is {w}×{h} pixels, over the {MAX_PIXELS:,}-pixel limit.")
                if im.format == "PNG":
                    with Image.open(path) as probe:
                        probe.verify()  # Pillow checks the chunk CRCs only here, not while decoding
                im.seek(0)
                if im.format in ("JPEG", "MPO", "TIFF", "PNG", "WEBP"):
                    im = ImageOps.exif_transpose(im)
                image = _to_grey_array(im)
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(f"{path.name} is no longer on the server; upload it again.") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{path.name} declares more pixels than the {MAX_PIXELS:,}-pixel limit.") from None
    except UnidentifiedImageError:
        fmt = _sniff(path)
        if fmt:
            raise ImageError(f"{path.name} looks like a {fmt} file, but its header is damaged or its variant is "
                             "not supported (e.g. 64-bit float); save it as 8/16-bit PNG or 32-bit float TIFF.") from None
        raise ImageError(f"{path.name} is not an image this app can read (PNG, JPEG, TIFF or BMP).") from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        reason = " ".join(str(err).split())[:120]  # one line, bounded
        raise ImageError(f"{path.name} could not be decoded; the file looks truncated or corrupt ({reason}).") from None
    check_slice(image, allow_flat)
    return image


def _to_grey_array(im: Image.Image) -> np.ndarray:
    """``(H, W)`` array from a PIL image, without squeezing 16-bit data through 8 bits."""
    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        return np.asarray(im).astype(np.uint16)
    if mode in ("I", "F", "L"):
        return np.asarray(im)
    if mode == "1":
        return np.asarray(im.convert("L"))
    if mode in ("LA", "La"):
        return np.asarray(im.getchannel("L"))
    if mode in ("P", "PA"):
        im = im.convert("RGBA")
        mode = "RGBA"
    if mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        im = im.convert("RGB")
        mode = "RGB"
    if mode not in ("RGB", "RGBA", "RGBa"):
        raise ImageError(f"Unsupported image mode {mode!r}; save the slice as greyscale PNG.")
    rgba = np.asarray(im.convert("RGBA"), dtype=np.float32)
    rgb = rgba[..., :3]
    if mode != "RGB":  # composite over black: transparent pixels carry no signal
        rgb = rgb * (rgba[..., 3:4] / 255.0)
    if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
        return rgb[..., 0]
    return rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


#: The sizes in mm a person may enter, for pixels and for slices: beyond them a number is a typo (or a
#: unit mix-up), and areas or volumes from it would be nonsense, or overflow.
ENTERED_MM_RANGE = (0.01, 100.0)


def entered_mm(value: float | None, what: str) -> float | None:
    """A size in mm a person entered, or ``None`` for none (empty or 0: the file's own, or the default).

    Raises :class:`ImageError` in one line for a value outside :data:`ENTERED_MM_RANGE` or not a number.
    """
    if value is None:
        return None
    try:
        mm = float(value)
    except (TypeError, ValueError):
        raise ImageError(f"{what} must be a number of mm; got {str(value)[:20]!r}.") from None
    if mm == 0:
        return None
    low, high = ENTERED_MM_RANGE
    if not low <= mm <= high:  # NaN fails too
        raise ImageError(f"{what} {mm:g} mm is outside {low:g}–{high:g} mm; enter the scan's value in mm "
                         "(0 or empty for the file's own or the default).")
    return mm


def resolve_pixel_spacing(path: str | Path | None, user_mm: float | None,
                          shape: tuple[int, int] | None = None) -> tuple[tuple[float, float], str]:
    """Pixel spacing ``(row_mm, col_mm)`` and where it came from: ``"entered"``, ``"file name"`` or ``"assumed"``
    (with the reason after a colon when a Kaggle name was not believed).

    ``shape``: the decoded image's ``(H, W)``; a Kaggle name that gives another size (a resized or
    renamed file) does not give the spacing either, as the Scan tab refuses such a slice. An entered
    value outside :data:`ENTERED_MM_RANGE` raises :class:`ImageError` (:func:`entered_mm`)."""
    if (mm := entered_mm(user_mm, "Pixel spacing")) is not None:
        return (mm, mm), "entered"
    parsed = parse_kaggle_name(path) if path else None
    default = (DEFAULT_PIXEL_SPACING_MM, DEFAULT_PIXEL_SPACING_MM)
    if parsed is not None and shape is not None and (parsed.height, parsed.width) != tuple(shape):
        return default, (f"assumed: the file name says {parsed.width}×{parsed.height} px, the image is "
                         f"{shape[1]}×{shape[0]}, so the name's spacing does not fit it")
    if parsed is not None:
        return parsed.pixel_spacing_mm, "file name"
    return default, "assumed"


def frame_count(path: str | Path) -> int:
    """How many frames (pages of a TIFF, frames of a GIF or APNG) an image file holds; 1 if unknown.

    :func:`read_slice` reads the first; a caller says so when there are more.
    """
    try:
        with Image.open(path) as im:
            return int(getattr(im, "n_frames", 1) or 1)
    except Exception:  # noqa: BLE001 - read_slice gives the file's real error
        return 1


def spacing_note(spacing_mm: tuple[float, float], source: str) -> str:
    """One line on a slice's pixel spacing and where it came from (:func:`resolve_pixel_spacing`)."""
    return (f"Pixel spacing {spacing_mm[0]:g} × {spacing_mm[1]:g} mm ({source})"
            + ("; enter the scan's spacing for correct areas." if source.startswith("assumed") else "."))
