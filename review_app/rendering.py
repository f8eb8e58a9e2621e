"""What the reviewer sees: windowed visits with mask overlays, the registered main image, mask summaries.

All masks of an analysis live in the reference frame (the registered main image's frame) in normalised
coordinates, the model's square input stretched over the whole film (``align_corners=False``). To show a
mask on the *unregistered* main image it is carried back through the inverse of theta, so an overlay sits
on the same anatomy in both visits. The registered main image is re-warped from the full-resolution film at
the reference's size (crisper than the model-size ``registered_main``, and the same geometry).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any, Literal

import cv2
import numpy as np
from PIL import Image

from diffvqa_core.imaging import side_by_side, window_level

MaskName = Literal["M", "U", "F", "none"]
MASK_LABELS: dict[str, str] = {"M": "M fused", "U": "U DINO prior", "F": "F adaptive"}
DISPLAY_MAX_SIDE = 1024
"""Long side of the rendered films and overlays: the film's own resolution up to this (sharp in full screen)."""
MASK_TILE_SIDE = 512
"""Long side of each mask panel (U, F, M)."""
MASK_TILE_COLOUR = 0.6
"""Weight of the colour in a mask panel: every value shows its colour on the shared scale, the film stays faint."""
COLORMAP = "turbo"


@dataclass(frozen=True)
class Display:
    """The reviewer's display settings.

    Attributes:
        mask: which mask to overlay ("M" fused, "U" prior, "F" adaptive, "none").
        opacity: strongest overlay opacity, reached where the mask is 1 (0 = no overlay).
        center: window centre in [0, 1] intensity units.
        width: window width in (0, 1] (1 with centre 0.5 = the full range).
    """

    mask: MaskName = "M"
    opacity: float = 0.5
    center: float = 0.5
    width: float = 1.0


@dataclass(frozen=True)
class Views:
    """Rendered RGB uint8 images for the UI."""

    reference: np.ndarray
    main: np.ndarray
    registered: np.ndarray
    reference_plain: np.ndarray
    mask_strip: np.ndarray
    mask_tiles: dict[str, np.ndarray] = field(default_factory=dict)
    """``{"U", "F", "M"}`` panels: each mask on the registered main film, colours on the shared 0-1 scale."""
    subtraction: np.ndarray | None = None
    """Temporal subtraction, registered main minus reference (:mod:`review_app.subtraction`), captioned."""


def invert_theta(theta: np.ndarray) -> np.ndarray:
    """The 2x3 affine that undoes ``theta`` (both map output to input normalised coordinates)."""
    theta = np.asarray(theta, dtype=np.float64).reshape(2, 3)
    inverse = np.linalg.inv(theta[:, :2])
    return np.concatenate([inverse, -inverse @ theta[:, 2:]], axis=1)


def warp_normalised(image: np.ndarray, theta: np.ndarray, out_shape: tuple[int, int],
                    border: Literal["replicate", "constant"] = "replicate") -> np.ndarray:
    """Sample ``image`` at ``theta @ [u, v, 1]`` for every output pixel, like ``affine_grid`` + ``grid_sample``.

    Args:
        image: (h, w) float array.
        theta: (2, 3) affine in normalised coordinates ([-1, 1] spans each image, pixel centres).
        out_shape: (H, W) of the result.
        border: "replicate" (the model's ``padding_mode="border"``) or "constant" (0 outside the image).

    Returns:
        (H, W) float32, bilinear.
    """
    height, width = out_shape
    src_h, src_w = image.shape[:2]
    theta = np.asarray(theta, dtype=np.float64).reshape(2, 3)
    u = (2.0 * np.arange(width) + 1.0) / width - 1.0
    v = (2.0 * np.arange(height) + 1.0) / height - 1.0
    grid_u, grid_v = np.meshgrid(u, v)  # (H, W)
    src_u = theta[0, 0] * grid_u + theta[0, 1] * grid_v + theta[0, 2]
    src_v = theta[1, 0] * grid_u + theta[1, 1] * grid_v + theta[1, 2]
    map_x = ((src_u + 1.0) * src_w - 1.0) / 2.0
    map_y = ((src_v + 1.0) * src_h - 1.0) / 2.0
    return cv2.remap(np.asarray(image, dtype=np.float32), map_x.astype(np.float32), map_y.astype(np.float32),
                     interpolation=cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE if border == "replicate" else cv2.BORDER_CONSTANT)


def fit_for_display(gray: np.ndarray, max_side: int = DISPLAY_MAX_SIDE) -> np.ndarray:
    """Downscale (never upscale) a [0, 1] image so its long side is at most ``max_side``."""
    gray = np.asarray(gray, dtype=np.float32)
    scale = max_side / max(gray.shape[:2])
    if scale >= 1.0:
        return gray
    size = (max(1, round(gray.shape[1] * scale)), max(1, round(gray.shape[0] * scale)))
    return cv2.resize(gray, size, interpolation=cv2.INTER_AREA)


def heat_overlay(gray_u8: np.ndarray, mask: np.ndarray, opacity: float) -> np.ndarray:
    """Colour a windowed radiograph where the mask is high; leave it grey where the mask is ~0.

    Unlike a uniform blend, the colour's weight is ``opacity * mask`` per pixel, so the anatomy outside the
    highlighted region stays readable at any opacity.

    Args:
        gray_u8: (H, W) uint8 windowed image.
        mask: (H, W) float in [0, 1], same size.
        opacity: weight of the colour where the mask is 1, in [0, 1].

    Returns:
        (H, W, 3) uint8 RGB.
    """
    import matplotlib

    mask = np.clip(np.asarray(mask, dtype=np.float32), 0.0, 1.0)
    colour = matplotlib.colormaps[COLORMAP](mask)[..., :3].astype(np.float32)
    base = (gray_u8.astype(np.float32) / 255.0)[..., None]
    alpha = (float(np.clip(opacity, 0.0, 1.0)) * mask)[..., None]
    return np.round(((1.0 - alpha) * base + alpha * colour) * 255.0).astype(np.uint8)


def gray_rgb(gray_u8: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 from (H, W) uint8."""
    return np.repeat(gray_u8[..., None], 3, axis=2)


def preview(gray: np.ndarray, display: Display) -> np.ndarray:
    """A windowed RGB view of a single film, no overlay."""
    return gray_rgb(window_level(fit_for_display(gray), display.center, display.width))


def masks_of(analysis: Any, fused: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """``{"U", "F", "M"}`` masks of an analysis; ``fused`` replaces M (a re-fusion at another lambda)."""
    return {
        "U": np.asarray(analysis.prior_mask, dtype=np.float32),
        "F": np.asarray(analysis.adaptive_mask, dtype=np.float32),
        "M": np.asarray(analysis.fused_mask if fused is None else fused, dtype=np.float32),
    }


def render_views(main: np.ndarray, ref: np.ndarray, theta: np.ndarray, masks: dict[str, np.ndarray],
                 display: Display, lam: float) -> Views:
    """Render the visits with the chosen overlay, the registered main image and the U | F | M strip.

    Args:
        main: (H, W) main visit in [0, 1] at its own resolution and aspect ratio.
        ref: (H', W') reference visit in [0, 1].
        theta: (2, 3) registration of the main visit onto the reference (normalised coordinates).
        masks: ``{"U", "F", "M"}`` (S, S) masks in the reference frame (see :func:`masks_of`).
        display: the reviewer's display settings.
        lam: lambda the fused mask belongs to (for the strip's label).

    Returns:
        :class:`Views`, RGB uint8.
    """
    from review_app.subtraction import subtraction_panel

    theta = np.asarray(theta, dtype=np.float64)
    ref = fit_for_display(ref)
    main = fit_for_display(main)
    ref_u8 = window_level(ref, display.center, display.width)
    main_u8 = window_level(main, display.center, display.width)
    registered_u8 = window_level(warp_normalised(main, theta, ref.shape), display.center, display.width)

    def on(frame_u8: np.ndarray, mask: np.ndarray, to_frame: np.ndarray) -> np.ndarray:
        return heat_overlay(frame_u8, warp_normalised(mask, to_frame, frame_u8.shape), display.opacity)

    identity = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    if display.mask in masks:
        chosen = masks[display.mask]
        reference, main_view = on(ref_u8, chosen, identity), on(main_u8, chosen, invert_theta(theta))
    else:
        reference, main_view = gray_rgb(ref_u8), gray_rgb(main_u8)
    tiles = mask_tiles(registered_u8, masks)
    labels = ["U  DINO prior", "F  adaptive", f"M  fused, lambda {lam:.2f}"]
    return Views(reference=reference, main=main_view,
                 registered=caption(gray_rgb(registered_u8), "registered main", corner="left"),
                 reference_plain=caption(gray_rgb(ref_u8), "reference", corner="right"),
                 mask_strip=side_by_side([tiles[k] for k in ("U", "F", "M")], labels, gap=6), mask_tiles=tiles,
                 subtraction=subtraction_panel(main, ref, theta, display.center, display.width))


def mask_tiles(film_u8: np.ndarray, masks: dict[str, np.ndarray], side: int = MASK_TILE_SIDE) -> dict[str, np.ndarray]:
    """Each mask as a colour panel over a faint copy of the film, all on one absolute 0-1 colour scale.

    Unlike :func:`heat_overlay` the colour's weight is the same everywhere, so a weak mask (F early in
    training, M at a low lambda) still shows its colour (dark blue for 0) and reads off :func:`colour_bar_html`.

    Args:
        film_u8: (H, W) uint8 windowed film in the masks' frame (the registered main image).
        masks: ``{"U", "F", "M"}`` masks in [0, 1] (any size, normalised coordinates over the film).
        side: long side of each panel in pixels.

    Returns:
        ``{"U", "F", "M"}`` (h, w, 3) uint8 RGB panels with the film's aspect ratio.
    """
    import matplotlib

    scale = side / max(film_u8.shape[:2])
    size = (max(1, round(film_u8.shape[1] * scale)), max(1, round(film_u8.shape[0] * scale)))
    base = cv2.resize(film_u8, size, interpolation=cv2.INTER_AREA).astype(np.float32)[..., None] / 255.0
    tiles = {}
    for name in ("U", "F", "M"):
        mask = np.clip(cv2.resize(np.asarray(masks[name], dtype=np.float32), size, interpolation=cv2.INTER_LINEAR),
                       0.0, 1.0)
        colour = matplotlib.colormaps[COLORMAP](mask)[..., :3].astype(np.float32)
        tiles[name] = np.round(((1.0 - MASK_TILE_COLOUR) * base + MASK_TILE_COLOUR * colour) * 255.0).astype(np.uint8)
    return tiles


def colour_bar_html(stops: int = 11) -> str:
    """The shared colour scale of the mask panels as an HTML bar (a CSS gradient of the colormap), 0 to 1."""
    import matplotlib

    colours = matplotlib.colormaps[COLORMAP](np.linspace(0.0, 1.0, stops))[:, :3]
    css = ", ".join(f"rgb({int(r * 255)},{int(g * 255)},{int(b * 255)}) {100 * i / (stops - 1):.0f}%"
                    for i, (r, g, b) in enumerate(colours))
    return (f'<div class="colour-bar" style="background: linear-gradient(to right, {css});"></div>'
            '<div class="colour-bar-ticks"><span>0 · ignored</span><span>0.5</span>'
            '<span>1 · read in full</span></div>')


def caption(rgb: np.ndarray, text: str, corner: Literal["left", "right"] = "left") -> np.ndarray:
    """Burn a white-on-black caption into a bottom corner of an RGB image (a copy), sized to the image.

    Bottom, because the top corners of an image component hold its label and buttons."""
    out = np.array(rgb, dtype=np.uint8, copy=True)
    scale = max(0.5, out.shape[1] / 900.0)
    thickness = max(1, round(scale * 1.6))
    (width, height), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    pad = max(4, round(6 * scale))
    x0 = max(0, pad if corner == "left" else out.shape[1] - width - 3 * pad)
    y0 = max(0, out.shape[0] - height - baseline - 3 * pad)
    box = out[y0:y0 + height + baseline + 2 * pad, x0:x0 + width + 2 * pad]
    box[:] = (box * 0.3).astype(np.uint8)
    cv2.putText(out, text, (x0 + pad, y0 + pad + height), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255),
                thickness, cv2.LINE_AA)
    return out


def review_png(views: Views, mask: str, lam: float) -> bytes:
    """The picture stored with a review (and exported): reference | main, each with the overlay the reviewer saw,
    then the temporal subtraction in the same window, as PNG."""
    label = MASK_LABELS.get(mask, "no overlay")
    panels = [views.reference, views.main]
    labels = [f"reference (prior) + {label}", f"main (current) + {label}, lambda {lam:.2f}"]
    if views.subtraction is not None:
        panels.append(views.subtraction)
        labels.append("subtraction: registered main - reference")
    picture = side_by_side(panels, labels)
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def mask_summary(masks: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """Per mask: mean, max and argmax as [row, col] in thousandths of the mask's size (size-independent)."""
    out: dict[str, dict[str, Any]] = {}
    for name, mask in masks.items():
        row, col = np.unravel_index(int(np.argmax(mask)), mask.shape)
        out[name] = {
            "mean": round(float(mask.mean()), 4),
            "max": round(float(mask.max()), 4),
            "argmax_permille": [int(1000 * (row + 0.5) / mask.shape[0]), int(1000 * (col + 0.5) / mask.shape[1])],
        }
    return out
