import warnings

import numpy as np
import pytest
from PIL import Image

from bad_inputs import CASES
from model.image import (
    DEFAULT_PIXEL_SPACING_MM, ImageError, normalize_intensity, parse_kaggle_name, read_slice,
    resolve_pixel_spacing, spacing_note,
)


def test_parse_kaggle_name_width_before_height():
    parsed = parse_kaggle_name("/tmp/x/slice_0070_360_310_1.50_1.63.png")
    assert (parsed.slice_number, parsed.width, parsed.height) == (70, 360, 310)
    assert parsed.pixel_spacing_mm == (1.63, 1.50)  # (row = PH, col = PW)
    assert parse_kaggle_name("case101_day20_slice_0078.png") is None


def test_resolve_pixel_spacing_sources():
    assert resolve_pixel_spacing("slice_0001_266_266_1.50_1.50.png", None) == ((1.5, 1.5), "file name")
    assert resolve_pixel_spacing("scan.png", 0.9) == ((0.9, 0.9), "entered")
    assert resolve_pixel_spacing("scan.png", None) == ((DEFAULT_PIXEL_SPACING_MM,) * 2, "assumed")
    # A Kaggle name whose size is not the image's (resized, or renamed) does not give the spacing.
    assert resolve_pixel_spacing("slice_0001_266_266_1.50_1.50.png", None, (266, 266)) == ((1.5, 1.5), "file name")
    spacing, source = resolve_pixel_spacing("slice_0001_266_266_1.63_1.63.png", None, (512, 512))
    assert spacing == (DEFAULT_PIXEL_SPACING_MM,) * 2 and source.startswith("assumed: the file name says 266×266 px")
    assert spacing_note(spacing, source).endswith("enter the scan's spacing for correct areas.")


def test_normalize_intensity_stretches_to_full_range():
    x = np.array([[100, 200], [300, 1100]], dtype=np.uint16)
    assert normalize_intensity(x).tolist() == [[0, 26], [51, 255]]


def test_normalize_intensity_8bit_and_16bit_copy_agree():
    rng = np.random.default_rng(0)
    x8 = rng.integers(0, 256, (64, 64), dtype=np.uint8)
    np.testing.assert_array_equal(normalize_intensity(x8), normalize_intensity(x8.astype(np.uint16) * 257))


def test_normalize_intensity_constant_and_nonfinite():
    assert normalize_intensity(np.full((4, 4), 7.0)).max() == 0
    out = normalize_intensity(np.array([[np.nan, 0.0], [np.inf, 10.0]]))
    assert out.dtype == np.uint8 and out.tolist() == [[0, 0], [0, 255]]


def test_read_16bit_png_keeps_depth(tmp_path):
    x = (np.arange(64 * 48, dtype=np.uint32).reshape(48, 64) * 20).astype(np.uint16)
    Image.fromarray(x).save(tmp_path / "s.png")
    out = read_slice(tmp_path / "s.png")
    assert out.dtype == np.uint16 and out.shape == (48, 64)
    np.testing.assert_array_equal(out, x)
    assert out.max() > 255  # not clipped to 8 bits


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P", "I;16"])
def test_read_modes_give_same_grey(tmp_path, mode):
    grey = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (32, 1))
    im = Image.fromarray(grey).convert(mode) if mode != "I;16" else Image.fromarray(grey.astype(np.uint16) * 257)
    im.save(tmp_path / "s.png")
    np.testing.assert_array_equal(normalize_intensity(read_slice(tmp_path / "s.png")), normalize_intensity(grey))


@pytest.mark.parametrize("fmt,suffix", [("JPEG", ".jpg"), ("TIFF", ".tif"), ("BMP", ".bmp")])
def test_read_other_formats(tmp_path, fmt, suffix):
    grey = np.tile(np.arange(0, 256, 8, dtype=np.uint8), (32, 1))
    Image.fromarray(grey).save(tmp_path / f"s{suffix}", format=fmt)
    assert read_slice(tmp_path / f"s{suffix}").shape == (32, 32)


@pytest.mark.parametrize("case", [c for c in CASES if c.id != "empty-submit"], ids=lambda c: c.id)
def test_bad_input_battery_decodes_or_refuses_in_one_line(tmp_path, case):
    """Each odd file is either decoded correctly or refused with one line that names no server folder."""
    path = case.make(tmp_path)
    if case.refuse:
        with pytest.raises(ImageError, match=case.refuse) as info:
            read_slice(path)
        assert "\n" not in str(info.value) and str(tmp_path) not in str(info.value)
    else:
        decoded = read_slice(path)
        assert decoded.shape == case.shape
        assert case.expect is None or case.expect(decoded), f"{case.id}: decoded content is wrong"


# --------------------------------------------------------------------------- properties of the intensity step

from hypothesis import example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

_NUMERIC_DTYPES = st.one_of(hnp.integer_dtypes(), hnp.unsigned_integer_dtypes(),
                            hnp.floating_dtypes(sizes=(16, 32, 64, 128)), st.just(np.dtype(bool)))
_ARRAYS = _NUMERIC_DTYPES.flatmap(lambda dtype: hnp.arrays(
    dtype, hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=6),
    # NaN, ±inf, subnormals and the dtype's extremes are all fair game.
    elements=hnp.from_dtype(dtype, allow_nan=True, allow_infinity=True) if dtype.kind == "f" else None,
))


@settings(max_examples=300, deadline=None)
@given(_ARRAYS)
@example(np.array([-1e308, 1e308]))  # the span overflows float64
@example(np.array([0.0, 5e-324]))  # a subnormal span: 255 / span overflows
@example(np.array([np.nan, np.inf, -np.inf], dtype=np.float16))
@example(np.array([0, np.iinfo(np.int64).max, np.iinfo(np.int64).min]))
@example(np.array([np.longdouble("1e4000"), 1]))  # beyond float64 where long double is wider: inf
def test_normalize_intensity_is_always_finite_uint8_and_ordered(image):
    with warnings.catch_warnings():
        # "invalid value encountered in cast" would mean a NaN reached the uint8 cast.
        warnings.filterwarnings("error", message="invalid value", category=RuntimeWarning)
        out = normalize_intensity(image)
    assert out.dtype == np.uint8 and out.shape == image.shape
    with np.errstate(over="ignore"):
        values = image.astype(np.float64)  # what the function sees; huge float128 becomes inf
    finite = np.isfinite(values)
    if finite.any() and values[finite].min() < values[finite].max():
        # A real stretch: darkest finite pixel → 0, brightest → 255, order kept, non-finite as darkest.
        assert out[finite].min() == 0 and out[finite].max() == 255
        order = np.argsort(values[finite], kind="stable")
        assert (np.diff(out[finite][order].astype(int)) >= 0).all()
        assert (out[~finite] == 0).all()
    else:
        assert (out == 0).all()
