"""Reading radiographs safely (every bad input of issue 8), windowing and overlays.

All fixtures are written to tmp_path; the one real radiograph is read in place from ../shared.
"""

from __future__ import annotations

import csv
import hashlib
import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from pydicom.data import get_testdata_file

from diffvqa_core.imaging import (
    ImageReadError,
    overlay,
    read_image,
    sha256_of,
    side_by_side,
    to_model_input,
    window_level,
)


def _gradient(height: int = 48, width: int = 64) -> np.ndarray:
    """uint8 image whose value grows along both axes (no symmetry, so flips and rotations show)."""
    yy, xx = np.mgrid[0:height, 0:width]
    return ((yy * 2 + xx) * 255 // (2 * (height - 1) + width - 1)).astype(np.uint8)


def _encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


VALID_PNG = _encode(Image.fromarray(_gradient()), "PNG")
VALID_JPEG = _encode(Image.fromarray(_gradient()), "JPEG")


# ---------------------------------------------------------------------------------- bad inputs


def test_empty_file_is_refused(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(ImageReadError, match="The file is empty"):
        read_image(path)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file_is_refused(tmp_path, fmt):
    data = _encode(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)), fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match=f"The {fmt} file is truncated or corrupt"):
        read_image(path)


def test_text_file_named_png_is_refused(tmp_path):
    path = tmp_path / "report.png"
    path.write_text("Findings: no pneumothorax. Impression: stable.\n" * 5)
    with pytest.raises(ImageReadError, match=r"not an image or DICOM \(it looks like text\)"):
        read_image(path)


def test_decompression_bomb_is_refused_from_its_header(tmp_path):
    header = struct.pack(">IIBBBBB", 60000, 60000, 8, 0, 0, 0, 0)  # 3.6 Gpx gray, no pixel data at all
    path = tmp_path / "bomb.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IEND", b""))
    with pytest.raises(ImageReadError, match="declares 60000 x 60000 pixels; the limit is 50,000,000"):
        read_image(path)


def test_tiny_image_is_refused():
    with pytest.raises(ImageReadError, match="8 x 8 pixels, too small to be a radiograph"):
        read_image(_encode(Image.new("L", (8, 8)), "PNG"))


def test_extreme_aspect_ratio_is_refused():
    with pytest.raises(ImageReadError, match="aspect ratio"):
        read_image(_encode(Image.new("L", (400, 40)), "PNG"))


def test_non_dicom_dcm_file_is_refused(tmp_path):
    path = tmp_path / "scan.dcm"
    path.write_bytes(VALID_PNG)
    with pytest.raises(ImageReadError, match="not DICOM"):
        read_image(path)


def test_unrecognised_binary_is_refused():
    with pytest.raises(ImageReadError, match="unrecognised format"):
        read_image(bytes(range(256)) * 4)


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(ImageReadError, match="No such image file"):
        read_image(tmp_path / "absent.png")


# ---------------------------------------------------------------------------- PNG/JPEG variants


def test_sixteen_bit_png_uses_the_value_range_present():
    stored = (1000 + _gradient().astype(np.uint16) * 8).astype(np.uint16)  # 12-bit-like data in 16 bits
    data = _encode(Image.fromarray(stored), "PNG")
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    gray = read_image(data)
    assert gray.dtype == np.float32 and gray.shape == stored.shape
    assert gray.min() == 0.0 and gray.max() == 1.0
    assert np.all(np.diff(gray, axis=1) >= 0)  # monotone in the stored values


def test_rgba_png_is_gray_with_transparent_areas_black():
    rgba = np.dstack([_gradient()] * 3 + [np.full(_gradient().shape, 255, np.uint8)])
    rgba[:, :10, 3] = 0
    gray = read_image(_encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    np.testing.assert_allclose(gray[:, 10:], _gradient()[:, 10:] / 255.0, atol=1 / 255)
    assert np.all(gray[:, :10] == 0.0)


def test_palette_png_is_read_through_its_palette():
    palette_image = Image.fromarray(_gradient()).convert("P")
    gray = read_image(_encode(palette_image, "PNG"))
    np.testing.assert_allclose(gray, np.asarray(palette_image.convert("L")) / 255.0, atol=1e-6)


def test_cmyk_jpeg_is_converted_to_gray():
    rgb = Image.fromarray(_gradient()).convert("RGB")
    gray = read_image(_encode(rgb.convert("CMYK"), "JPEG", quality=95))
    assert np.abs(gray - _gradient() / 255.0).mean() < 0.03


def test_exif_orientation_is_applied():
    stored = _gradient(48, 64)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    upright = read_image(_encode(Image.fromarray(stored), "JPEG", quality=95, exif=exif))
    assert upright.shape == (64, 48)
    assert np.abs(upright - np.rot90(stored, k=-1) / 255.0).mean() < 0.02


def test_pil_image_and_bytes_inputs_match_the_file(tmp_path):
    path = tmp_path / "image.png"
    path.write_bytes(VALID_PNG)
    from_file = read_image(path)
    np.testing.assert_array_equal(from_file, read_image(VALID_PNG))
    np.testing.assert_array_equal(from_file, read_image(Image.open(path)))
    np.testing.assert_array_equal(from_file, read_image(str(path)))


# ---------------------------------------------------------------------------------------- arrays


@pytest.mark.parametrize(
    "array",
    [
        _gradient(),
        _gradient() / 255.0,
        np.dstack([_gradient()] * 3),
        np.dstack([_gradient()] * 3 + [np.full(_gradient().shape, 255, np.uint8)]),
    ],
    ids=["uint8", "float", "rgb", "rgba"],
)
def test_arrays_become_unit_range_float32(array):
    gray = read_image(array)
    assert gray.shape == (48, 64) and gray.dtype == np.float32
    assert gray.min() >= 0.0 and gray.max() <= 1.0
    np.testing.assert_allclose(gray, _gradient() / 255.0, atol=2e-3)


def test_uint16_array_uses_the_robust_value_range():
    gray = read_image(_gradient().astype(np.uint16) * 200 + 3000)
    assert gray.min() == 0.0 and gray.max() == 1.0
    assert np.abs(gray - _gradient() / 255.0).max() < 0.02  # only the outer 0.1 % of values are clipped


def test_array_with_nan_is_refused():
    array = np.zeros((40, 40))
    array[3, 3] = np.nan
    with pytest.raises(ImageReadError, match="NaN"):
        read_image(array)


def test_array_of_wrong_shape_is_refused():
    with pytest.raises(ImageReadError, match="shape"):
        read_image(np.zeros((40, 40, 2)))


# ------------------------------------------------------------------------------------------- DICOM


def _testdata(name: str) -> str:
    path = get_testdata_file(name, download=False)
    if path is None:
        from feedback_support import missing

        missing(f"pydicom test file {name} is not installed", "DIFFVQA_REQUIRE_DICOM_CASES")
    return path


def _monochrome_dicom(tmp_path, photometric: str) -> tuple:
    """pydicom's CR 'MONOCHROME1' example (16 x 16, window 1600/2800) enlarged to 64 x 64 pixels."""
    dataset = pydicom.dcmread(_testdata("6154"))
    stored = np.kron(dataset.pixel_array, np.ones((4, 4), dtype=dataset.pixel_array.dtype))
    dataset.Rows, dataset.Columns = stored.shape
    dataset.PixelData = stored.tobytes()
    dataset.PhotometricInterpretation = photometric
    path = tmp_path / f"{photometric}.dcm"
    dataset.save_as(path)
    return path, dataset, stored


def test_dicom_monochrome1_is_inverted_after_the_window(tmp_path):
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    path, dataset, stored = _monochrome_dicom(tmp_path, "MONOCHROME1")
    windowed = apply_voi_lut(apply_modality_lut(stored, dataset), dataset)
    low, high = 0 * 0.684 + 200, 4095 * 0.684 + 200  # the window's output range (12 bits stored, rescaled)
    expected = 1.0 - (windowed - low) / (high - low)
    gray = read_image(path)
    np.testing.assert_allclose(gray, expected, atol=1e-5)
    assert gray.flat[np.argmax(stored)] == gray.min()  # the highest stored value is the darkest in MONOCHROME1


def test_dicom_monochrome1_is_the_negative_of_the_same_data_as_monochrome2(tmp_path):
    mono1 = read_image(_monochrome_dicom(tmp_path, "MONOCHROME1")[0])
    mono2 = read_image(_monochrome_dicom(tmp_path, "MONOCHROME2")[0])
    np.testing.assert_allclose(mono1, 1.0 - mono2, atol=1e-6)


def test_dicom_is_detected_by_its_marker_not_its_name(tmp_path):
    path = tmp_path / "scan.png"
    path.write_bytes(Path(_testdata("CT_small.dcm")).read_bytes())
    gray = read_image(path)
    assert gray.shape == (128, 128) and gray.min() == 0.0 and gray.max() == 1.0


def test_dicom_with_compressed_syntax_and_no_decoder_is_refused():
    from pydicom.pixels.decoders import JPEGLSLosslessDecoder

    if JPEGLSLosslessDecoder.is_available:
        from feedback_support import missing

        missing("a JPEG-LS decoder is installed here", "DIFFVQA_REQUIRE_DICOM_CASES")
    with pytest.raises(ImageReadError, match="DICOM uses compressed transfer syntax JPEG-LS Lossless.*no decoder"):
        read_image(_testdata("MR_small_jpeg_ls_lossless.dcm"))


def test_dicom_without_pixel_data_is_refused(tmp_path):
    from reliability_support import dicom_without_pixels

    path = tmp_path / "report.dcm"
    path.write_bytes(dicom_without_pixels())
    with pytest.raises(ImageReadError, match="DICOM file has no pixel data"):
        read_image(path)


def test_corrupt_dicom_is_refused():
    data = Path(_testdata("CT_small.dcm")).read_bytes()
    with pytest.raises(ImageReadError, match="DICOM"):
        read_image(data[: len(data) // 2])


def test_dicom_declaring_a_huge_image_is_refused_before_decoding():
    dataset = pydicom.dcmread(_testdata("CT_small.dcm"))
    dataset.Rows = dataset.Columns = 60000
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    with pytest.raises(ImageReadError, match="declares 60000 x 60000 pixels"):
        read_image(buffer.getvalue())


def test_multi_frame_dicom_gives_its_first_frame(tmp_path):
    dataset = pydicom.dcmread(_testdata("CT_small.dcm"))
    first = dataset.pixel_array
    dataset.NumberOfFrames = 2
    dataset.PixelData = first.tobytes() + (first[::-1]).tobytes()
    path = tmp_path / "two_frames.dcm"
    dataset.save_as(path)
    np.testing.assert_array_equal(read_image(path), read_image(_testdata("CT_small.dcm")))


def test_rgb_dicom_becomes_gray():
    gray = read_image(_testdata("SC_rgb_jpeg_dcmtk.dcm"))
    assert gray.shape == (100, 100) and gray.dtype == np.float32
    assert 0.0 <= gray.min() < gray.max() <= 1.0


# ------------------------------------------------------------------------------ real radiograph


def test_real_radiograph_is_read_exactly(mhh_pairs_dir):
    with open(mhh_pairs_dir / "manifest.csv", newline="") as handle:
        pair = next(csv.DictReader(handle))
    path = mhh_pairs_dir / pair["main_file"]
    gray = read_image(path)
    assert gray.shape == (int(pair["main_height"]), int(pair["main_width"]))
    np.testing.assert_array_equal(gray, np.asarray(Image.open(path).convert("L"), dtype=np.float32) / 255.0)
    assert sha256_of(path) == pair["main_sha256"]


# ------------------------------------------------------------------------------------- fuzzing


def _mutations() -> st.SearchStrategy[bytes]:
    """Random bytes, and truncations or byte edits of a valid PNG, JPEG and DICOM file."""
    dicom = Path(get_testdata_file("CT_small.dcm", download=False)).read_bytes()
    valid = st.sampled_from([VALID_PNG, VALID_JPEG, dicom])
    truncated = valid.flatmap(lambda data: st.integers(0, len(data)).map(lambda n: data[:n]))
    edited = valid.flatmap(lambda data: st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(0, 255)),
                                                 min_size=1, max_size=8).map(lambda edits: _apply_edits(data, edits)))
    return st.one_of(st.binary(max_size=2048), truncated, edited)


def _apply_edits(data: bytes, edits: list[tuple[int, int]]) -> bytes:
    mutable = bytearray(data)
    for position, value in edits:
        mutable[position] = value
    return bytes(mutable)


@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(data=_mutations())
def test_reader_raises_only_image_read_error_on_damaged_bytes(data):
    try:
        gray = read_image(data)
    except ImageReadError:
        return
    assert gray.dtype == np.float32 and gray.ndim == 2
    assert gray.min() >= 0.0 and gray.max() <= 1.0


# ------------------------------------------------------------------------------- hashing, display


def test_sha256_of_hashes_raw_bytes_and_array_buffers(tmp_path):
    path = tmp_path / "image.png"
    path.write_bytes(VALID_PNG)
    expected = hashlib.sha256(VALID_PNG).hexdigest()
    assert sha256_of(path) == sha256_of(VALID_PNG) == expected
    array = _gradient()
    assert sha256_of(array) == hashlib.sha256(array.tobytes()).hexdigest()


def test_window_level_maps_the_window_onto_the_display_range():
    gray = np.array([[0.0, 0.3, 0.5, 0.7, 1.0]] * 40, dtype=np.float32)
    np.testing.assert_array_equal(window_level(gray, 0.4, 0.4)[0], [0, 64, 191, 255, 255])
    np.testing.assert_array_equal(window_level(gray, 0.5, 1.0)[0], [0, 76, 128, 178, 255])
    with pytest.raises(ValueError):
        window_level(gray, 0.5, 0.0)


def test_overlay_blends_a_colour_mapped_mask():
    gray = np.full((40, 50), 0.5, dtype=np.float32)
    mask = np.zeros((20, 25), dtype=np.float32)
    mask[:10] = 1.0
    blended = overlay(gray, mask, opacity=0.5, cmap="jet")
    assert blended.shape == (40, 50, 3) and blended.dtype == np.uint8
    assert blended[0, 0, 0] > blended[0, 0, 2]  # jet(1) is red
    assert blended[-1, -1, 2] > blended[-1, -1, 0]  # jet(0) is blue
    np.testing.assert_array_equal(overlay(gray, mask, opacity=0.0), np.full((40, 50, 3), 128, np.uint8))


def test_side_by_side_puts_labelled_panels_at_a_common_height():
    panels = [np.zeros((100, 80), np.float32), np.full((50, 50), 255, np.uint8), np.zeros((100, 60, 3), np.uint8)]
    sheet = side_by_side(panels, ["main", "reference", "mask"])
    assert sheet.dtype == np.uint8 and sheet.ndim == 3 and sheet.shape[2] == 3
    assert sheet.shape[1] == 80 + 100 + 60 + 2 * 8
    assert sheet.shape[0] > 100 and sheet[: sheet.shape[0] - 100].max() == 255  # the white caption text


def test_to_model_input_is_a_square_three_channel_tensor():
    tensor = to_model_input(_gradient() / 255.0, 32)
    assert tuple(tensor.shape) == (3, 32, 32)
    assert float(tensor.min()) >= 0.0 and float(tensor.max()) <= 1.0
