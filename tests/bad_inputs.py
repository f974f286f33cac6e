"""The bad-input battery: odd files a public demo receives, and the answer each must get.

Each :class:`Case` writes one upload into a folder and says what must happen: ``refuse`` (a
regex the one-line message must match) or ``shape`` (the decoded slice's ``(H, W)``) with an
optional ``expect`` check on what :func:`model.image.read_slice` returns. The same table runs
through ``read_slice``, the ``app.segment`` handler and the HTTP API.

Upload names start with ``upl-`` so tests can assert that no upload name reaches a log.
"""

from __future__ import annotations

import io
import re
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from model.image import normalize_intensity

H, W = 48, 64  # not square, so a transposed decode shows


def smooth_slice(h: int = H, w: int = W) -> np.ndarray:
    """``(h, w) uint8``: a diagonal gradient with a bright block near the top-left (JPEG-friendly, asymmetric)."""
    yy, xx = np.mgrid[0:h, 0:w]
    image = 40 + 120 * (yy / h) + 60 * (xx / w)
    image[4:16, 4:20] = 250
    return image.astype(np.uint8)


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel())[0, 1])


def close_to(reference: np.ndarray, min_corr: float = 0.98) -> Callable[[np.ndarray], bool]:
    return lambda decoded: decoded.shape == reference.shape and _corr(decoded, reference) > min_corr


def equal_to(reference: np.ndarray) -> Callable[[np.ndarray], bool]:
    return lambda decoded: np.array_equal(decoded, reference)


@dataclass(frozen=True)
class Case:
    id: str
    make: Callable[[Path], Path | None]  # writes the upload into a folder; None: an empty submit
    refuse: str | None = None  # regex of the one-line message
    shape: tuple[int, int] | None = None  # else: the decoded (H, W)
    expect: Callable[[np.ndarray], bool] | None = None
    http: bool = True  # False: cannot be sent as an upload (no file, or a file that vanished)
    note: str | None = None  # a regex the Slice tab's note must match (a decoded upload only)

    def __post_init__(self):
        assert (self.refuse is None) != (self.shape is None), self.id


# --------------------------------------------------------------------------- writers


def _bytes(name: str, data: bytes | Callable[[], bytes]):
    def make(folder: Path) -> Path:
        path = folder / name
        path.write_bytes(data() if callable(data) else data)
        return path
    return make


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _tiff(array: np.ndarray, **kwargs) -> bytes:
    import tifffile  # comes with scikit-image

    buf = io.BytesIO()
    tifffile.imwrite(buf, array, **kwargs)
    return buf.getvalue()


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def _raw_png(width: int, height: int, depth: int, colour_type: int, rows: bytes, extra: bytes = b"") -> bytes:
    """A PNG written by hand, for layouts Pillow cannot write (16-bit colour, forged headers)."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + extra
            + _png_chunk(b"IDAT", zlib.compress(rows)) + _png_chunk(b"IEND", b""))


def _png16(channels: np.ndarray, colour_type: int) -> bytes:
    """``(H, W, C) uint16`` as a 16-bit PNG (colour type 4: grey+alpha, 6: RGBA)."""
    h, w = channels.shape[:2]
    rows = b"".join(b"\x00" + channels[y].astype(">u2").tobytes() for y in range(h))
    return _raw_png(w, h, 16, colour_type, rows)


def _flip_byte(data: bytes, offset: int) -> bytes:
    damaged = bytearray(data)
    damaged[offset] ^= 0xFF
    return bytes(damaged)


def _crc_offset(png: bytes, tag: bytes) -> int:
    """Offset of the CRC of the first ``tag`` chunk."""
    at = png.index(tag)
    length = struct.unpack(">I", png[at - 4:at])[0]
    return at + 4 + length


def _zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("slice.png", _encode(Image.fromarray(smooth_slice()), "PNG"))
    return buf.getvalue()


def _exif_rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the stored pixels must be turned 90° clockwise for display
    return _encode(Image.fromarray(smooth_slice()), "JPEG", quality=95, exif=exif)


def _palette_with_transparency(fmt: str) -> bytes:
    indices = (smooth_slice() // 16).astype(np.uint8)  # 16 palette entries
    indices[30:40, 40:60] = 0  # index 0 is transparent
    image = Image.fromarray(indices, mode="P")
    image.putpalette([v for i in range(16) for v in (i * 16 + 8,) * 3])
    return _encode(image, fmt, transparency=0)


def _frames() -> list[Image.Image]:
    first = smooth_slice()
    return [Image.fromarray(first), Image.fromarray(first[::-1].copy()), Image.fromarray(first[:, ::-1].copy())]


_FRAMES = r"The file holds [2-9] frames; the first one was segmented"


def _animated(fmt: str) -> bytes:
    first, *rest = _frames()
    return _encode(first, fmt, save_all=True, append_images=rest, **({"duration": 100} if fmt != "TIFF" else {}))


def _float_with_nonfinite() -> np.ndarray:
    image = smooth_slice().astype(np.float32) / 7.0
    image[0, :8] = np.nan
    image[1, :8] = np.inf
    image[2, :8] = -np.inf
    return image


def _expect_nonfinite_as_background(decoded: np.ndarray) -> bool:
    reference = _float_with_nonfinite()
    out = normalize_intensity(decoded)
    finite = np.isfinite(reference)
    return (np.array_equal(np.isnan(decoded), np.isnan(reference))
            and (out[~finite] == 0).all()
            and np.array_equal(out[finite], normalize_intensity(np.where(finite, reference, reference[finite].min()))[finite]))


def _signed16() -> np.ndarray:
    return (smooth_slice().astype(np.int16) - 128) * 100  # -12800..12200


def _grey16() -> np.ndarray:
    return smooth_slice().astype(np.uint16) * 257


def _rgba16(alpha: int = 65535) -> np.ndarray:
    grey = _grey16()
    return np.stack([grey, grey, grey, np.full_like(grey, alpha)], axis=-1)


def _palette_expect(decoded: np.ndarray) -> bool:
    return (decoded[30:40, 40:60] == 0).all() and (np.delete(decoded, np.s_[30:40], axis=0) > 0).all()


# --------------------------------------------------------------------------- the battery

_src = smooth_slice()
_png = _encode(Image.fromarray(_src), "PNG")
_jpeg = _encode(Image.fromarray(_src), "JPEG", quality=95)

CASES: list[Case] = [
    # Nothing, or nothing that is an image.
    Case("empty-submit", lambda folder: None, refuse=r"^No image", http=True),
    Case("zero-bytes", _bytes("upl-empty.png", b""), refuse=r"is empty \(0 bytes\)"),
    Case("text-as-png", _bytes("upl-notes.png", b"hello, these are not pixels\n"), refuse=r"is not an image"),
    Case("html-as-png", _bytes("upl-page.png", b"<html><script>alert(1)</script></html>"), refuse=r"is not an image"),
    Case("zip-as-png", _bytes("upl-archive.png", _zip_bytes), refuse=r"is not an image"),
    Case("vanished-upload", lambda folder: folder / "upl-gone.png", refuse=r"no longer on the server; upload it again",
         http=False),
    # Damaged files.
    Case("truncated-png", _bytes("upl-trunc.png", _png[: len(_png) // 2]), refuse=r"truncated or corrupt"),
    Case("truncated-jpeg", _bytes("upl-trunc.jpg", _jpeg[: len(_jpeg) // 2]), refuse=r"truncated or corrupt"),
    Case("png-bad-idat-crc", _bytes("upl-crc.png", _flip_byte(_png, _crc_offset(_png, b"IDAT"))),
         refuse=r"corrupt \(broken PNG file \(bad header checksum in b'IDAT'\)\)"),
    Case("png-bad-ihdr-crc", _bytes("upl-hdr.png", _flip_byte(_png, _crc_offset(_png, b"IHDR"))),
         refuse=r"looks like a PNG file, but its header is damaged"),
    Case("float64-tiff", _bytes("upl-f64.tif", lambda: _tiff(_src.astype(np.float64))),
         refuse=r"looks like a TIFF file.*32-bit float TIFF"),
    # Sizes.
    Case("bomb-5000x5000", _bytes("upl-bomb.png", lambda: _encode(Image.new("L", (5000, 5000)), "PNG")),
         refuse=r"5000×5000 pixels, over the 16,777,216-pixel limit"),
    Case("bomb-forged-header", _bytes("upl-forged.png", lambda: _raw_png(100_000, 100_000, 8, 0, b"\x00" * 64)),
         refuse=r"declares more pixels than the 16,777,216-pixel limit"),
    Case("ztxt-bomb", _bytes("upl-ztxt.png", lambda: _raw_png(
        W, H, 8, 0, b"".join(b"\x00" + _src[y].tobytes() for y in range(H)),
        extra=_png_chunk(b"zTXt", b"Comment\x00\x00" + zlib.compress(b"\x00" * (8 << 20))))),
        refuse=r"truncated or corrupt \(Decompressed data too large"),
    Case("1x1", _bytes("upl-dot.png", lambda: _encode(Image.new("L", (1, 1), 7), "PNG")),
         refuse=r"1×1 pixels; a slice must be at least 16 pixels"),
    Case("10000x1", _bytes("upl-line.png", lambda: _encode(Image.fromarray((np.arange(10000) % 256).astype(np.uint8)[None]), "PNG")),
         refuse=r"10000×1 pixels; a slice must be at least 16 pixels"),
    Case("all-constant", _bytes("upl-flat.png", lambda: _encode(Image.new("I;16", (W, H), 1234), "PNG")),
         refuse=r"single flat intensity"),
    # Unusual pixel formats.
    Case("float-tiff-nan-inf", _bytes("upl-nan.tif", lambda: _tiff(_float_with_nonfinite())), shape=(H, W),
         expect=_expect_nonfinite_as_background),
    Case("float-tiff-all-nan", _bytes("upl-allnan.tif", lambda: _tiff(np.full((H, W), np.nan, np.float32))),
         refuse=r"no finite pixel values"),
    Case("signed-16-bit-tiff", _bytes("upl-s16.tif", lambda: _tiff(_signed16())), shape=(H, W),
         expect=equal_to(_signed16())),
    Case("rgba-16-bit-png", _bytes("upl-rgba16.png", lambda: _png16(_rgba16(), 6)), shape=(H, W),
         expect=close_to(_src, 0.999)),
    Case("rgba-16-bit-tiff", _bytes("upl-rgba16.tif", lambda: _tiff(_rgba16(), photometric="rgb", extrasamples=[2])),
         shape=(H, W), expect=close_to(_src, 0.999)),
    Case("grey-alpha-16-bit-png", _bytes("upl-la16.png", lambda: _png16(_rgba16()[..., [0, 3]], 4)), shape=(H, W),
         expect=close_to(_src, 0.999)),
    Case("palette-transparency-png", _bytes("upl-pal.png", lambda: _palette_with_transparency("PNG")), shape=(H, W),
         expect=_palette_expect),
    Case("palette-transparency-gif", _bytes("upl-pal.gif", lambda: _palette_with_transparency("GIF")), shape=(H, W),
         expect=_palette_expect),
    Case("cmyk-jpeg", _bytes("upl-cmyk.jpg", lambda: _encode(Image.fromarray(_src).convert("CMYK"), "JPEG", quality=95)),
         shape=(H, W), expect=close_to(_src)),
    # Several frames: the first one is the slice, and the note says so.
    Case("animated-gif", _bytes("upl-anim.gif", lambda: _animated("GIF")), shape=(H, W), expect=close_to(_src, 0.999),
         note=_FRAMES),
    Case("apng", _bytes("upl-anim.png", lambda: _animated("PNG")), shape=(H, W), expect=equal_to(_src), note=_FRAMES),
    Case("multipage-tiff", _bytes("upl-pages.tif", lambda: _animated("TIFF")), shape=(H, W), expect=equal_to(_src),
         note=_FRAMES),
    # Orientation and names.
    Case("exif-rotated-jpeg", _bytes("upl-rot.jpg", _exif_rotated_jpeg), shape=(W, H),
         expect=close_to(np.rot90(_src, k=-1))),
    Case("png-named-jpg", _bytes("upl-png.jpg", _png), shape=(H, W), expect=equal_to(_src)),
    Case("jpeg-named-png", _bytes("upl-jpeg.png", _jpeg), shape=(H, W), expect=close_to(_src)),
    Case("tiff-without-suffix", _bytes("upl-tiff", lambda: _tiff(_grey16())), shape=(H, W), expect=equal_to(_grey16())),
    Case("bmp-named-tif", _bytes("upl-bmp.tif", lambda: _encode(Image.fromarray(_src), "BMP")), shape=(H, W),
         expect=equal_to(_src)),
    Case("long-unicode-name", _bytes("upl-" + "ü" * 95 + ".png", _png), shape=(H, W), expect=equal_to(_src)),
]


def good_slice(folder: Path) -> Path:
    """A small valid upload, for "does the server still answer" checks."""
    path = folder / "upl-good.png"
    if not path.exists():
        Image.fromarray(smooth_slice()).save(path)
    return path


def assert_one_clean_line(message: str, case_id: str, refuse: str) -> None:
    assert re.search(refuse, message), f"{case_id}: {message!r} does not match {refuse!r}"
    assert "\n" not in message and "Traceback" not in message and 'File "' not in message, message


def server_path(value) -> Path:
    """The server-side path of a file output (download_files=False gives FileData or a dict)."""
    return Path(value["path"] if isinstance(value, dict) else getattr(value, "path", value))
