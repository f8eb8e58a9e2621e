"""Image reading, preprocessing and display for radiographs.

Reading (PNG/JPEG 8/16 bit, DICOM), safe failure on bad input, windowing and overlays live here;
everything downstream works on grayscale float32 arrays in [0, 1] of shape (H, W).

Untrusted files are checked in this order, so that nothing large is allocated before it is known to be
sane: size on disk, emptiness, format by magic bytes (never by extension), the declared pixel size read
from the header, then the decode itself. Every failure is an :class:`ImageReadError` whose message a
radiologist can act on; no DICOM identifier is ever kept or put in a message.
"""

from __future__ import annotations

import hashlib
import io
import struct
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
from PIL import Image, ImageOps

if TYPE_CHECKING:  # torch is imported where a tensor is made: the review app's UI process never loads it
    import torch

MAX_PIXELS = 50_000_000
"""Largest accepted image (declared width x height); a 43 x 43 cm detector at 100 um is ~18.5 Mpx."""
MIN_SIDE = 32
"""Smallest accepted side in pixels; anything smaller cannot be a radiograph."""
MAX_ASPECT = 8.0
"""Largest accepted long/short side ratio (long-leg and spine stitches stay well below 1:8)."""
MAX_FILE_BYTES = 1 << 30
"""Largest accepted file (1 GiB), checked before the file is read."""
ROBUST_PERCENTILES = (0.1, 99.9)
"""Percentiles that bound the value range of 16-bit and unwindowed data before scaling to [0, 1]."""

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
_DICOM_MAGIC_OFFSET = 128
_JPEG_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_JPEG_STANDALONE_MARKERS = frozenset({0x01, *range(0xD0, 0xD9)})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_PIXEL_DATA_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")

ImageSource = str | Path | bytes | bytearray | Image.Image | np.ndarray


class ImageReadError(ValueError):
    """An input that cannot be read as a radiograph; the message is meant for the person who chose it."""


# --------------------------------------------------------------------------------------------- reading


def read_image(source: ImageSource) -> np.ndarray:
    """Read a radiograph from a file, its bytes, a PIL image or an array, safely.

    PNG and JPEG (8 or 16 bit; gray, RGB, RGBA, LA, palette, CMYK) have their EXIF orientation applied;
    transparent pixels are composited onto black. DICOM (detected by the ``DICM`` marker at byte 128, not
    by the file name) gets the modality LUT (rescale slope/intercept), then the VOI LUT or window, then
    MONOCHROME1 inversion; only the first frame of a multi-frame object is read; colour becomes luma.
    8-bit data is scaled by 1/255; 16-bit and unwindowed data by the robust range present
    (:data:`ROBUST_PERCENTILES`); windowed DICOM by the window's own output range.

    Args:
        source: path (``str`` or ``Path``), the raw file bytes, a ``PIL.Image.Image``, or an ndarray of shape
            (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) of any integer, bool or float dtype.

    Returns:
        (H, W) float32 array in [0, 1], 0 = black (air on a conventional radiograph).

    Raises:
        ImageReadError: for an empty, truncated, unrecognised, too large, too small or too elongated input,
            a DICOM without pixel data or with a compression no installed decoder can read.
    """
    if isinstance(source, np.ndarray):
        return _array_to_gray(source)
    if isinstance(source, Image.Image):
        return _pil_to_gray(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _bytes_to_gray(bytes(source), name_hint="")
    if isinstance(source, (str, Path)):
        return _bytes_to_gray(_read_file(Path(source)), name_hint=str(source))
    if source is None:
        raise ImageReadError("No image was given")
    raise ImageReadError(f"Cannot read an image from a {type(source).__name__}; give a file path, bytes or an image")


def sha256_of(source: ImageSource) -> str:
    """SHA-256 hex digest identifying an input without storing it.

    Files and bytes are hashed as raw bytes (so the digest equals ``sha256sum`` of the file); arrays by their
    C-order buffer (``arr.tobytes()``); PIL images by the buffer of ``np.asarray(image)``.

    Args:
        source: the same kinds of input :func:`read_image` accepts.

    Returns:
        64 lowercase hex characters.
    """
    if isinstance(source, (str, Path)):
        digest = hashlib.sha256()
        with open(source, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest()
    if isinstance(source, Image.Image):
        source = np.asarray(source)
    if isinstance(source, np.ndarray):
        return hashlib.sha256(np.ascontiguousarray(source).tobytes()).hexdigest()
    if isinstance(source, (bytes, bytearray, memoryview)):
        return hashlib.sha256(bytes(source)).hexdigest()
    raise TypeError(f"cannot hash a {type(source).__name__}; give a path, bytes, a PIL image or an array")


def _read_file(path: Path) -> bytes:
    """Read a whole file after checking that it exists and is not absurdly large."""
    if not path.is_file():
        raise ImageReadError(f"No such image file: {path.name}")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise ImageReadError(f"The file is {size / 2**20:.0f} MB; the limit is {MAX_FILE_BYTES / 2**20:.0f} MB")
    return path.read_bytes()


def _bytes_to_gray(data: bytes, name_hint: str) -> np.ndarray:
    """Dispatch raw file bytes to the DICOM or PNG/JPEG reader by their magic bytes."""
    if not data:
        raise ImageReadError("The file is empty")
    if data[_DICOM_MAGIC_OFFSET : _DICOM_MAGIC_OFFSET + 4] == b"DICM":
        return _dicom_to_gray(data)
    if name_hint.lower().endswith((".dcm", ".dicom")):
        raise ImageReadError("This .dcm file is not DICOM (it has no 'DICM' marker at byte 128)")
    if data.startswith(_PNG_MAGIC) or data.startswith(_JPEG_MAGIC):
        return _encoded_to_gray(data)
    if _looks_like_text(data):
        raise ImageReadError("This file is not an image or DICOM (it looks like text)")
    raise ImageReadError("This file is not a PNG, JPEG or DICOM image (unrecognised format)")


def _looks_like_text(data: bytes) -> bool:
    """True when the first KiB has no NUL byte and is mostly printable UTF-8."""
    head = data[:1024]
    if b"\x00" in head:
        return False
    text = head.decode("utf-8", errors="replace")
    printable = sum(ch != "\ufffd" and (ch.isprintable() or ch in "\r\n\t") for ch in text)
    return printable / len(text) > 0.95


def _check_geometry(width: int, height: int, what: str = "image") -> None:
    """Reject sizes no radiograph has, before any pixel buffer is allocated."""
    if width * height > MAX_PIXELS:
        raise ImageReadError(
            f"The {what} declares {width} x {height} pixels; the limit is {MAX_PIXELS:,} pixels "
            f"(about {int(MAX_PIXELS ** 0.5)} x {int(MAX_PIXELS ** 0.5)})"
        )
    if min(width, height) < MIN_SIDE:
        raise ImageReadError(
            f"The {what} is {width} x {height} pixels, too small to be a radiograph (at least {MIN_SIDE} per side)"
        )
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise ImageReadError(
            f"The {what} is {width} x {height} pixels, an aspect ratio beyond 1:{MAX_ASPECT:g}; "
            "this is not a radiograph"
        )


# ------------------------------------------------------------------------------------------ PNG / JPEG


def _declared_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG IHDR or JPEG SOF header, without decoding; None if not found."""
    if data.startswith(_PNG_MAGIC):
        if len(data) >= 24 and data[12:16] == b"IHDR":
            return struct.unpack(">II", data[16:24])
        return None
    return _jpeg_declared_size(data)


def _jpeg_declared_size(data: bytes) -> tuple[int, int] | None:
    """Walk the JPEG marker segments up to the first start-of-frame and read its size."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
        elif marker in _JPEG_STANDALONE_MARKERS:
            pos += 2
        elif marker in _JPEG_SOF_MARKERS:
            if pos + 9 > len(data):
                return None
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return width, height
        else:
            pos += 2 + struct.unpack(">H", data[pos + 2 : pos + 4])[0]
    return None


def _encoded_to_gray(data: bytes) -> np.ndarray:
    """Decode PNG/JPEG bytes after checking the declared size."""
    kind = "PNG" if data.startswith(_PNG_MAGIC) else "JPEG"
    size = _declared_size(data)
    if size is None:
        raise ImageReadError(f"The {kind} file is truncated or corrupt (no readable image header)")
    _check_geometry(*size)
    try:
        image = Image.open(io.BytesIO(data), formats=[kind])
        image.load()
    except Exception as exc:  # decoders raise OSError, SyntaxError, EOFError, zlib/struct errors...
        raise ImageReadError(f"The {kind} file is truncated or corrupt") from exc
    return _pil_to_gray(image)


def _pil_to_gray(image: Image.Image) -> np.ndarray:
    """Orient, check and convert a PIL image to (H, W) float32 in [0, 1]."""
    _check_geometry(*image.size)
    try:
        image.load()
    except Exception as exc:  # decoders raise OSError, SyntaxError, EOFError, zlib/struct errors...
        raise ImageReadError("The image file is truncated or corrupt") from exc
    try:
        image = ImageOps.exif_transpose(image)
    except Exception as exc:  # a malformed EXIF block
        raise ImageReadError("The image's orientation (EXIF) data is corrupt") from exc
    if image.mode in _ALPHA_MODES or (image.mode in ("L", "P", "RGB") and "transparency" in image.info):
        return _composite_on_black(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return _scale_robust(np.asarray(image, dtype=np.float64))
    return np.asarray(image.convert("L"), dtype=np.float32) / 255.0


def _composite_on_black(image: Image.Image) -> np.ndarray:
    """Luma of an image with alpha, transparent areas black."""
    rgba = np.asarray(image.convert("RGBA"), dtype=np.float32) / 255.0
    return (_luma(rgba[..., :3]) * rgba[..., 3]).astype(np.float32)


# ---------------------------------------------------------------------------------------------- arrays


def _array_to_gray(array: np.ndarray) -> np.ndarray:
    """Check and scale an in-memory image array to (H, W) float32 in [0, 1]."""
    if array.ndim == 3 and array.shape[2] in (1, 3, 4):
        height, width = array.shape[:2]
    elif array.ndim == 2:
        height, width = array.shape
    else:
        raise ImageReadError(f"An image array must be (H, W) or (H, W, 1|3|4); got shape {array.shape}")
    _check_geometry(width, height)
    values = _array_values(array)
    if array.ndim == 2 or array.shape[2] == 1:
        return values.reshape(height, width)
    gray = _luma(values[..., :3])
    if array.shape[2] == 4:
        gray = gray * values[..., 3]
    return gray.astype(np.float32)


def _array_values(array: np.ndarray) -> np.ndarray:
    """Scale array values to [0, 1] by dtype: bool and uint8 fixed, float in [0, 1] kept, else robust."""
    if array.dtype == bool:
        return array.astype(np.float32)
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ImageReadError(f"An image array must hold numbers; got dtype {array.dtype}")
    values = array.astype(np.float64)
    if not np.isfinite(values).all():
        raise ImageReadError("The image contains NaN or infinite values")
    if np.issubdtype(array.dtype, np.floating) and values.min() >= 0.0 and values.max() <= 1.0:
        return values.astype(np.float32)
    return _scale_robust(values)


# ----------------------------------------------------------------------------------------------- DICOM


def _dicom_to_gray(data: bytes) -> np.ndarray:
    """Read the first frame of a DICOM file: modality LUT, VOI LUT/window, MONOCHROME1 inversion.

    pydicom's warnings about malformed elements quote the element values (UIDs, names) and are silenced
    here, so that no identifier reaches a log.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _dicom_frame_to_gray(_parse_dicom(data))


def _dicom_frame_to_gray(dataset) -> np.ndarray:
    """Check, decode and map the first frame of a parsed DICOM dataset to [0, 1] gray."""
    _check_dicom_header(dataset)
    pixels = _decode_first_frame(dataset)
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric.startswith("MONOCHROME"):
        gray = _monochrome_to_unit(pixels, dataset)
        gray = 1.0 - gray if photometric == "MONOCHROME1" else gray
    else:
        gray = _dicom_colour_to_gray(pixels, dataset, photometric)
    if gray.ndim != 2:
        raise ImageReadError(f"The DICOM frame has shape {gray.shape}, which is not a single grayscale image")
    return gray.astype(np.float32)


def _parse_dicom(data: bytes):
    """Parse a DICOM dataset (header and undecoded pixel data)."""
    import pydicom

    try:
        return pydicom.dcmread(io.BytesIO(data))
    except Exception as exc:  # pydicom raises InvalidDicomError, struct/EOF/value errors on damaged files
        raise ImageReadError("The DICOM file is truncated or corrupt") from exc


def _check_dicom_header(dataset) -> None:
    """Reject DICOM without pixel data or with an absurd geometry, before decoding."""
    if not any(keyword in dataset for keyword in _PIXEL_DATA_KEYWORDS):
        raise ImageReadError("DICOM file has no pixel data (a report, structured report or plan, or a file cut short)")
    try:
        width, height = int(dataset.Columns), int(dataset.Rows)
    except (AttributeError, TypeError, ValueError) as exc:
        raise ImageReadError("DICOM file has pixel data but no valid Rows/Columns") from exc
    _check_geometry(width, height, what="DICOM image")


def _decode_first_frame(dataset) -> np.ndarray:
    """Decode frame 0 only; a failure names the transfer syntax and whether a decoder is installed."""
    from pydicom.pixels import pixel_array

    try:
        return pixel_array(dataset, index=0)
    except Exception as exc:  # missing codec, wrong length, inconsistent Bits/Samples attributes...
        raise ImageReadError(_decode_failure(dataset.file_meta.get("TransferSyntaxUID"))) from exc


def _decode_failure(syntax) -> str:
    """The message for pixel data that could not be decoded."""
    from pydicom.pixels import get_decoder

    if syntax is None or not syntax.is_transfer_syntax:
        return "The DICOM file declares no known transfer syntax, so its pixel data cannot be decoded"
    if not syntax.is_compressed:
        return "The DICOM pixel data is truncated or corrupt"
    try:
        available = get_decoder(syntax).is_available
    except NotImplementedError:
        available = False
    if not available:
        return (
            f"DICOM uses compressed transfer syntax {syntax.name} ({syntax}) and no decoder is installed "
            "that can read it (install pylibjpeg with pylibjpeg-libjpeg/-openjpeg, or python-gdcm)"
        )
    return (
        f"The DICOM pixel data ({syntax.name}) could not be decoded: it is corrupt, or a variant the installed "
        "decoders do not support (e.g. 12-bit JPEG needs pylibjpeg-libjpeg or python-gdcm)"
    )


def _monochrome_to_unit(pixels: np.ndarray, dataset) -> np.ndarray:
    """Modality LUT, then VOI LUT/window scaled by its own output range; robust range if there is none."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    values = apply_modality_lut(pixels, dataset).astype(np.float64)
    if not ("VOILUTSequence" in dataset or "WindowCenter" in dataset):
        return _scale_robust(values)
    try:
        windowed = apply_voi_lut(values, dataset, index=0)
        # The VOI transform is monotone and saturates, so its image of +/-huge is its output range.
        low, high = apply_voi_lut(np.array([-1e15, 1e15]), dataset, index=0).astype(np.float64)
    except Exception as exc:  # malformed window or LUT attributes
        raise ImageReadError("The DICOM window (VOI LUT) attributes are invalid") from exc
    if high == low:
        return np.zeros(values.shape, dtype=np.float32)
    return np.clip((np.asarray(windowed, dtype=np.float64) - low) / (high - low), 0.0, 1.0).astype(np.float32)


def _dicom_colour_to_gray(pixels: np.ndarray, dataset, photometric: str) -> np.ndarray:
    """Luma of an RGB/YBR (already converted to RGB by pydicom) or palette-colour DICOM frame."""
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        pixels = apply_color_lut(pixels, dataset)
    if pixels.ndim != 3 or pixels.shape[-1] != 3:
        raise ImageReadError(f"DICOM photometric interpretation {photometric} is not supported")
    bits = int(dataset.get("BitsStored", 8)) if photometric != "PALETTE COLOR" else 16
    scale = float(2**bits - 1) if pixels.dtype != np.uint8 else 255.0
    return np.clip(_luma(pixels.astype(np.float64) / scale), 0.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------- is it a frontal chest film?

RADIOGRAPH_MODALITIES = frozenset({"CR", "DX", "DR", "RG"})
"""DICOM Modality values of projection radiographs: computed (CR), digital (DX), radiographic imaging (RG);
"DR" is not a DICOM term but some digital-radiography systems write it."""
LATERAL_VIEWS = frozenset({"LL", "RL", "LLD", "RLD", "LAT", "LATERAL", "LEFT LATERAL", "RIGHT LATERAL"})
"""DICOM ViewPosition values of lateral (and lateral decubitus) projections."""


def not_a_radiograph(source: ImageSource) -> str | None:
    """Why a DICOM file is not a projection radiograph (a CT or MR slice, an ultrasound frame), else None.

    DiffVQA is trained on chest radiographs; any other image would still get a fluent answer, so callers
    refuse what this flags. Only the Modality attribute (0008,0060) is read: no identifier, no pixel data.
    PNG and JPEG carry no such fact, and a DICOM that leaves it empty is given the benefit of the doubt.

    Args:
        source: a file path or the file's bytes (anything else has no DICOM header: None).

    Returns:
        A sentence for a radiologist, or None.
    """
    modality, _ = _dicom_modality_and_view(source)
    if modality and modality not in RADIOGRAPH_MODALITIES:
        return (f"it is not a radiograph (DICOM Modality {modality}); DiffVQA reads chest radiographs "
                "(Modality CR or DX)")
    return None


def lateral_view(source: ImageSource) -> str | None:
    """Why a DICOM file is not a frontal film (its ViewPosition says lateral), else None.

    The model learned from frontal (PA or AP) films; callers flag an answer about a lateral view. Only the
    ViewPosition attribute (0018,5101) is read.

    Args:
        source: a file path or the file's bytes (anything else: None).

    Returns:
        A sentence for a radiologist, or None.
    """
    _, view = _dicom_modality_and_view(source)
    if view in LATERAL_VIEWS:
        return f"it is a lateral view (DICOM ViewPosition {view}); DiffVQA was trained on frontal (PA or AP) films"
    return None


def _dicom_modality_and_view(source: ImageSource) -> tuple[str, str]:
    """Upper-case Modality and ViewPosition of a DICOM file ("" when absent, unreadable or not DICOM)."""
    import pydicom

    if isinstance(source, (bytes, bytearray, memoryview)):
        handle: Any = io.BytesIO(bytes(source))
    elif isinstance(source, (str, Path)):
        try:
            handle = open(source, "rb")  # noqa: SIM115 - closed below
        except OSError:
            return "", ""
    else:
        return "", ""
    try:
        with handle:
            if handle.read(_DICOM_MAGIC_OFFSET + 4)[_DICOM_MAGIC_OFFSET:] != b"DICM":
                return "", ""
            handle.seek(0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                dataset = pydicom.dcmread(handle, stop_before_pixels=True, specific_tags=["Modality", "ViewPosition"])
    except Exception:  # noqa: BLE001 - an unreadable header is read_image's to report
        return "", ""

    def clean(keyword: str) -> str:
        text = " ".join(str(dataset.get(keyword, "") or "").upper().split())
        return "".join(ch for ch in text if ch.isalnum() or ch == " ")[:16]

    return clean("Modality"), clean("ViewPosition")


# ------------------------------------------------------------------------------------------ value maps


def _luma(rgb: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma of (..., 3) RGB values (the weights PIL's ``convert("L")`` uses)."""
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def _scale_robust(values: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] by the :data:`ROBUST_PERCENTILES` range present; a constant image becomes 0."""
    low, high = np.percentile(values, ROBUST_PERCENTILES)
    if high <= low:
        return np.zeros(values.shape, dtype=np.float32)
    return np.clip((values - low) / (high - low), 0.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------------------------- display


def window_level(gray: np.ndarray, center: float, width: float) -> np.ndarray:
    """Apply a display window to a [0, 1] radiograph.

    Args:
        gray: (H, W) float array in [0, 1].
        center: window centre in the same [0, 1] units (0.5 = mid grey).
        width: window width in [0, 1] units, > 0 (1.0 with centre 0.5 shows the full range).

    Returns:
        (H, W) uint8 image: ``center - width/2`` maps to 0 and ``center + width/2`` to 255.
    """
    if width <= 0:
        raise ValueError(f"window width must be positive, got {width}")
    low = center - width / 2.0
    scaled = np.clip((np.asarray(gray, dtype=np.float32) - low) / width, 0.0, 1.0)
    return np.round(scaled * 255.0).astype(np.uint8)


def overlay(gray: np.ndarray, mask: np.ndarray, opacity: float = 0.45, cmap: str = "jet") -> np.ndarray:
    """Blend a colour-mapped [0, 1] mask over a grayscale radiograph.

    Args:
        gray: (H, W) float in [0, 1] or uint8 (e.g. the output of :func:`window_level`).
        mask: (h, w) float in [0, 1]; resized (bilinear) to (H, W) when its size differs.
        opacity: weight of the colour layer, in [0, 1]; the same everywhere (0 shows only the image).
        cmap: any matplotlib colormap name ("jet", "magma", "viridis", ...).

    Returns:
        (H, W, 3) uint8 RGB image ``(1 - opacity) * gray + opacity * cmap(mask)``.
    """
    import matplotlib

    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must lie in [0, 1], got {opacity}")
    base = _as_unit_gray(gray)
    mask = np.clip(_resize_to(np.asarray(mask, dtype=np.float32), base.shape), 0.0, 1.0)
    colour = matplotlib.colormaps[cmap](mask)[..., :3]
    blended = (1.0 - opacity) * base[..., None] + opacity * colour
    return np.round(blended * 255.0).astype(np.uint8)


def side_by_side(images: Sequence[np.ndarray], labels: Sequence[str], gap: int = 8) -> np.ndarray:
    """Lay images out left to right at a common height, each with a label strip above it.

    Args:
        images: each (H, W) float in [0, 1] or uint8, or (H, W, 3) uint8 RGB.
        labels: one caption per image (ASCII; drawn with ``cv2.putText``).
        gap: black pixels between panels.

    Returns:
        (H_max + label strip, sum of widths + gaps, 3) uint8 RGB image, ready to save as PNG.
    """
    if len(images) != len(labels) or not images:
        raise ValueError("side_by_side needs one label per image and at least one image")
    height = max(np.asarray(image).shape[0] for image in images)
    panels = [_labelled_panel(_as_rgb_uint8(image), label, height) for image, label in zip(images, labels)]
    spacer = np.zeros((panels[0].shape[0], gap, 3), dtype=np.uint8)
    row = [piece for panel in panels for piece in (panel, spacer)][:-1]
    return np.concatenate(row, axis=1)


def _labelled_panel(rgb: np.ndarray, label: str, height: int) -> np.ndarray:
    """Resize an RGB panel to ``height`` (aspect kept) and put a white-on-black caption above it."""
    width = max(1, round(rgb.shape[1] * height / rgb.shape[0]))
    panel = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
    scale = max(0.4, height / 800.0)
    strip_height = int(round(30 * scale)) + 6
    strip = np.zeros((strip_height, width, 3), dtype=np.uint8)
    cv2.putText(strip, label, (4, strip_height - 8), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255),
                max(1, int(round(scale * 1.5))), cv2.LINE_AA)
    return np.concatenate([strip, panel], axis=0)


def _as_unit_gray(gray: np.ndarray) -> np.ndarray:
    """(H, W) float32 in [0, 1] from a [0, 1] float or uint8 grayscale image."""
    gray = np.asarray(gray)
    if gray.dtype == np.uint8:
        return gray.astype(np.float32) / 255.0
    return np.clip(gray.astype(np.float32), 0.0, 1.0)


def _as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 from a grayscale ([0, 1] float or uint8) or RGB uint8 image."""
    image = np.asarray(image)
    if image.ndim == 3:
        return image.astype(np.uint8)
    gray = np.round(_as_unit_gray(image) * 255.0).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=2)


def _resize_to(array: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a 2-D float array to ``shape`` = (H, W); a no-op when it already matches."""
    if array.shape == tuple(shape):
        return array
    return cv2.resize(array, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


# ------------------------------------------------------------------------------------------ model input


def to_model_input(gray: np.ndarray, size: int) -> torch.Tensor:
    """Resize a grayscale radiograph to the model's square input and replicate it to 3 channels.

    Args:
        gray: (H, W) float array in [0, 1].
        size: output side in pixels (384 in the paper).

    Returns:
        (3, size, size) float32 tensor in [0, 1]. The aspect ratio is not kept: the benchmark's baselines
        resize the whole film to a square, and so do we, in training and at inference alike.
    """
    import torch

    gray = np.asarray(gray, dtype=np.float32)
    interp = cv2.INTER_AREA if min(gray.shape[:2]) > size else cv2.INTER_LINEAR
    resized = cv2.resize(gray, (size, size), interpolation=interp)
    tensor = torch.from_numpy(np.clip(resized, 0.0, 1.0))
    return tensor.unsqueeze(0).expand(3, size, size).contiguous()
