"""Temporal subtraction: the registered main (current) film minus the reference (prior) film.

The established reading aid for interval change on chest radiographs (Kano et al., "Digital image
subtraction of temporally sequential chest images for detection of interval change", Med. Phys. 21(3), 1994):
align the current film to the prior, subtract, and what did not change (ribs, heart border, lung markings)
cancels to a flat background while a new or resolved density stands out. Here:

1. **register**: the main film is warped onto the reference with the model's own registration theta (the
   same warp as the slider's "registered main", so the view also shows where the registration failed);
2. **intensity-match** (Kano et al.'s density correction, in its simplest linear form): inside the *body*
   (the reference's pixels above an Otsu threshold where both films have data: soft tissue, mediastinum and
   bone, the dark lungs and the air outside left out) the registered main film is scaled to the reference's
   mean and standard deviation, so a change of exposure between the visits does not show up as a change.
   Leaving the lungs out keeps a large new opacity from shifting the match (measured on the synthetic
   benchmark: the change stood out about half as well when the match used the whole central film);
3. **window**: both films go through the reviewer's window (centre, width), exactly as on screen, and the
   windowed values are subtracted: a narrower window amplifies the difference inside it, as it does the films;
4. **display**: a diverging colormap centred at 0 with a dark centre (matplotlib's ``berlin``: blue, black,
   orange-red): red = denser now than before (a new opacity, more fluid, a larger heart), blue = less dense
   now (something resolved); black = unchanged. The colour scale spans +-:data:`SUBTRACTION_RANGE` windowed
   units.

Not in the paper; a view for the reviewer only: the model never sees it.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from review_app.rendering import fit_for_display, warp_normalised

SUBTRACTION_COLORMAP = "berlin"
"""Diverging, dark in the middle (readable on the reading room's dark screen): blue < 0 < red."""
SUBTRACTION_RANGE = 0.25
"""Half-range of the colour scale in windowed units: a difference of +-0.25 of the window is full colour."""
SUBTRACTION_NOTE = ("**Temporal subtraction**: the registered main film minus the reference, exposures matched, "
                    "in the films' window. Black: unchanged; red: denser now; blue: less dense now. Edges that "
                    "line up in pairs show where the registration is off.")
MIN_BODY_SHARE = 0.05
"""Below this share of the film the body mask is not trusted and the whole overlap is matched instead."""


@dataclass(frozen=True)
class Subtraction:
    """A temporal subtraction in the reference frame.

    Attributes:
        difference: (H, W) float32, windowed registered main minus windowed reference, in [-1, 1]; 0 outside
            ``overlap``.
        body: (H, W) bool, where the intensities were matched (the body inside the overlap).
        overlap: (H, W) bool, where the registered main film has data (not the warp's padded border).
    """

    difference: np.ndarray
    body: np.ndarray
    overlap: np.ndarray


def overlap_of(main_shape: tuple[int, int], theta: np.ndarray, out_shape: tuple[int, int]) -> np.ndarray:
    """Where ``warp_normalised(main, theta, out_shape)`` samples inside the main film: (H, W) bool."""
    inside = warp_normalised(np.ones(main_shape, dtype=np.float32), theta, out_shape, border="constant")
    return inside > 0.999


def body_mask(reference: np.ndarray, overlap: np.ndarray) -> np.ndarray:
    """The body in the reference film: above Otsu's threshold of its smoothed intensities, inside ``overlap``.

    Falls back to the whole overlap when that is under :data:`MIN_BODY_SHARE` of the film.
    """
    smooth = cv2.GaussianBlur(np.asarray(reference, dtype=np.float32), (0, 0), max(1.0, reference.shape[0] / 200))
    u8 = np.round(np.clip(smooth, 0.0, 1.0) * 255.0).astype(np.uint8)
    threshold, _ = cv2.threshold(u8[overlap] if overlap.any() else u8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    body = (u8 > threshold) & overlap
    return body if body.mean() >= MIN_BODY_SHARE else overlap


def match_intensity(moving: np.ndarray, fixed: np.ndarray, region: np.ndarray) -> np.ndarray:
    """``moving`` scaled linearly so its mean and standard deviation inside ``region`` equal ``fixed``'s."""
    if not region.any():
        return np.asarray(moving, dtype=np.float32)
    mu_m, sd_m = float(moving[region].mean()), float(moving[region].std())
    mu_f, sd_f = float(fixed[region].mean()), float(fixed[region].std())
    scale = sd_f / sd_m if sd_m > 1e-6 else 1.0
    return ((moving - mu_m) * scale + mu_f).astype(np.float32)


def windowed(gray: np.ndarray, center: float, width: float) -> np.ndarray:
    """The display window as floats in [0, 1] (``window_level`` without the rounding to 8 bits)."""
    return np.clip((np.asarray(gray, dtype=np.float32) - (center - width / 2.0)) / max(width, 1e-6), 0.0, 1.0)


def temporal_subtraction(main: np.ndarray, ref: np.ndarray, theta: np.ndarray, center: float = 0.5,
                         width: float = 1.0) -> Subtraction:
    """Registered main minus reference, intensity-matched inside the body, through the display window.

    Args:
        main: (h, w) main (current) film in [0, 1], any size.
        ref: (H, W) reference (prior) film in [0, 1]; the result has its size.
        theta: (2, 3) registration of the main film onto the reference (normalised coordinates: the output
            pixel u samples the main film at ``theta @ [u, 1]``).
        center, width: the reviewer's display window, in [0, 1] intensity units.

    Returns:
        :class:`Subtraction` in the reference frame.
    """
    ref = np.asarray(ref, dtype=np.float32)
    registered = warp_normalised(main, theta, ref.shape)
    overlap = overlap_of(np.asarray(main).shape[:2], theta, ref.shape)
    body = body_mask(ref, overlap)
    matched = match_intensity(registered, ref, body)
    difference = windowed(matched, center, width) - windowed(ref, center, width)
    return Subtraction(np.where(overlap, difference, 0.0).astype(np.float32), body, overlap)


def subtraction_rgb(difference: np.ndarray, value_range: float = SUBTRACTION_RANGE) -> np.ndarray:
    """A signed difference as (H, W, 3) uint8 RGB on the diverging colormap, 0 at its (black) centre."""
    import matplotlib

    scaled = np.clip(np.asarray(difference, dtype=np.float32) / (2.0 * value_range) + 0.5, 0.0, 1.0)
    return np.round(matplotlib.colormaps[SUBTRACTION_COLORMAP](scaled)[..., :3] * 255.0).astype(np.uint8)


def subtraction_panel(main: np.ndarray, ref: np.ndarray, theta: np.ndarray, center: float = 0.5,
                      width: float = 1.0) -> np.ndarray:
    """The subtraction panel of the review screen: RGB uint8 at the (display-sized) reference's size.

    No caption burnt in: the panel's label says what it is (and a caption would cover a small film's base)."""
    result = temporal_subtraction(fit_for_display(main), fit_for_display(ref), theta, center, width)
    return subtraction_rgb(result.difference)


def subtraction_bar_html(stops: int = 11) -> str:
    """The subtraction's colour scale as an HTML bar (inline styles), -range to +range."""
    import matplotlib

    colours = matplotlib.colormaps[SUBTRACTION_COLORMAP](np.linspace(0.0, 1.0, stops))[:, :3]
    css = ", ".join(f"rgb({int(r * 255)},{int(g * 255)},{int(b * 255)}) {100 * i / (stops - 1):.0f}%"
                    for i, (r, g, b) in enumerate(colours))
    bar = ("height: 14px; border-radius: 4px; border: 1px solid #475569; "
           f"background: linear-gradient(to right, {css});")
    ticks = "display: flex; justify-content: space-between; font-size: 12px; margin-top: 2px;"
    return (f'<div class="subtraction-bar" style="{bar}"></div><div style="{ticks}">'
            f"<span>−{SUBTRACTION_RANGE:g} less dense</span><span>0 unchanged</span>"
            f"<span>+{SUBTRACTION_RANGE:g} denser</span></div>")
