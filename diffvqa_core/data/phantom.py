"""Procedural frontal chest radiograph phantoms (and real backgrounds) as an attenuation-like density map.

The phantom is drawn in the patient's canonical frame, in normalised image coordinates (x to the viewer's
right, y down; the patient's right lung is on the viewer's left). Density is roughly "how white the film is":
air 0, soft tissue ~0.6, aerated lung ~0.3, bone adds 0.1-0.2. Findings (``lesions``) add density deltas
on top; ``synthetic`` warps, tones and adds noise per visit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

LUNG_CONTRAST = 0.42  # density removed by aerated lung


@dataclass
class Anatomy:
    """One patient's anatomy in the canonical frame.

    Attributes:
        density: (S, S) float32 density without findings.
        lungs: side ("left"/"right", the patient's) -> (S, S) float32 soft mask of the lung field
            behind which no heart lies (what findings in aerated lung may darken or whiten).
        lung_fields: side -> (S, S) float32 soft mask of the whole hemithorax outline (heart included).
        markings: (S, S) float32 density of the vessels (removed under a pneumothorax).
        boxes: side -> (x_medial, x_lateral, y_apex, y_costophrenic), normalised.
        heart: (cx, cy, half_width, half_height, angle_deg), normalised.
        hila: side -> (x, y), normalised.
        soft_tissue: median density over the heart, the level that fluid or a larger heart brings lung to.
    """

    density: np.ndarray
    lungs: dict[str, np.ndarray]
    lung_fields: dict[str, np.ndarray]
    markings: np.ndarray
    boxes: dict[str, tuple[float, float, float, float]]
    heart: tuple[float, float, float, float, float]
    hila: dict[str, tuple[float, float]]
    soft_tissue: float
    grid: tuple[np.ndarray, np.ndarray] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        size = self.density.shape[0]
        coords = (np.arange(size, dtype=np.float32) + 0.5) / size
        self.grid = (coords[None, :].repeat(size, 0), coords[:, None].repeat(size, 1))

    @property
    def size(self) -> int:
        """Side of the square image in pixels."""
        return self.density.shape[0]


def _points(xy: np.ndarray, size: int) -> np.ndarray:
    return np.round(np.asarray(xy) * size * 16).astype(np.int32)  # 4 fractional bits


def blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur by ``sigma`` px; wide blurs run at a quarter of the resolution (same look, 10x faster)."""
    if sigma <= 0:
        return image
    if sigma < 4:
        return cv2.GaussianBlur(image, (0, 0), sigma)
    size = image.shape[1], image.shape[0]
    small = cv2.resize(image, (size[0] // 4, size[1] // 4), interpolation=cv2.INTER_AREA)
    return cv2.resize(cv2.GaussianBlur(small, (0, 0), sigma / 4), size, interpolation=cv2.INTER_LINEAR)


def fill_polygon(size: int, xy: np.ndarray, soften: float = 0.0) -> np.ndarray:
    """(S, S) float32 mask of a polygon given in normalised coordinates, Gaussian-softened by ``soften`` px."""
    mask = np.zeros((size, size), np.float32)
    cv2.fillPoly(mask, [_points(xy, size)], 1.0, cv2.LINE_AA, shift=4)
    return blur(mask, soften)


def fill_ellipse(size: int, center, axes, angle: float = 0.0, soften: float = 0.0) -> np.ndarray:
    """(S, S) float32 mask of an ellipse (normalised centre and half-axes), softened by ``soften`` px."""
    mask = np.zeros((size, size), np.float32)
    cv2.ellipse(mask, tuple(int(v) for v in _points(center, size)), tuple(int(v) for v in _points(axes, size)),
                angle, 0, 360, 1.0, -1, cv2.LINE_AA, shift=4)
    return blur(mask, soften)


def draw_curve(layer: np.ndarray, xy: np.ndarray, thickness_px: float, value: float = 1.0) -> None:
    """Draw a polyline (normalised coordinates) into ``layer`` in place."""
    cv2.polylines(layer, [_points(xy, layer.shape[0])], False, value, max(1, int(round(thickness_px))),
                  cv2.LINE_AA, shift=4)


def smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """(S, S) float32 smooth random field in about [-1, 1] with ``cells`` blobs across."""
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    return cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC) * 0.6


def _lung_outline(sign: float, apex_y: float, cp_y: float, lateral: float, medial: float,
                  dome_y: float) -> np.ndarray:
    """Hemithorax outline; ``sign`` -1 for the viewer's left (patient's right), +1 for the viewer's right."""
    u = np.linspace(0.0, 1.0, 24)
    apex_x = medial + 0.45 * (lateral - medial)
    wall_x = apex_x + (lateral - apex_x) * (1.0 - (1.0 - u) ** 2) ** 0.35
    wall = np.stack([wall_x, apex_y + u * (cp_y - apex_y)], 1)
    v = np.linspace(0.0, 1.0, 24)  # lateral -> medial along the diaphragm dome, highest at 55%
    rise = np.where(v < 0.55, ((0.55 - v) / 0.55) ** 2 * (cp_y - dome_y), ((v - 0.55) / 0.45) ** 2 * 0.03)
    dome = np.stack([lateral + v * (medial - lateral), dome_y + rise], 1)
    w = np.linspace(0.0, 1.0, 10)  # medial edge, up to a rounded apex
    medial_edge = np.stack([medial + (apex_x - medial) * w ** 5, dome_y + 0.03 + w * (apex_y - dome_y - 0.03)], 1)
    outline = np.concatenate([wall, dome, medial_edge])
    outline[:, 0] = 0.5 + sign * outline[:, 0]
    return outline


def _ribs(size: int, rng: np.random.Generator, apex_y: float, lateral: float) -> np.ndarray:
    """Posterior rib arcs with brighter cortices, fainter anterior ribs, both sides."""
    thick = np.zeros((size, size), np.float32)
    thin = np.zeros((size, size), np.float32)
    anterior = np.zeros((size, size), np.float32)
    spacing = rng.uniform(0.052, 0.06)
    t = np.linspace(0.0, 1.0, 30)
    for sign in (-1.0, 1.0):
        for i in range(10):
            y0 = apex_y - 0.03 + i * spacing
            reach = lateral - 0.01
            drop = 0.06 + 0.012 * i
            xy = np.stack([0.5 + sign * (0.035 + reach * t),
                           y0 - 0.04 * np.sin(np.pi * t * 0.8) + drop * t ** 2], 1)
            draw_curve(thick, xy, size * 0.02)
            draw_curve(thin, xy, size * 0.008)
        for i in range(6):
            y0 = apex_y + 0.03 + i * spacing * 1.05
            xy = np.stack([0.5 + sign * (lateral - 0.30 * t), y0 + 0.10 * t + 0.03 * t ** 2], 1)
            draw_curve(anterior, xy, size * 0.014)
    posterior = blur(thick - 0.55 * thin, size * 0.002 + 0.5)
    return 0.10 * posterior + 0.035 * blur(anterior, size * 0.003)


def _vessels(size: int, rng: np.random.Generator, hila: dict[str, tuple[float, float]]) -> np.ndarray:
    """Branching pulmonary vessels from each hilum, thinning towards the periphery."""
    layer = np.zeros((size, size), np.float32)
    stack = []
    for side, (hx, hy) in hila.items():
        outward = -1.0 if side == "right" else 1.0
        for angle in np.linspace(-110, 110, 7) + rng.uniform(-10, 10, 7):
            rad = np.deg2rad(angle)
            stack.append((hx, hy, np.arctan2(-np.cos(rad), outward * np.sin(rad)), 0.09, 5))
    while stack:
        x, y, direction, length, depth = stack.pop()
        x2, y2 = x + length * np.cos(direction), y + length * np.sin(direction)
        cv2.line(layer, (int(x * size * 16), int(y * size * 16)), (int(x2 * size * 16), int(y2 * size * 16)),
                 0.3 + 0.14 * depth, max(1, int(depth * size / 800)), cv2.LINE_AA, shift=4)
        if depth > 1:
            for turn in (-0.45, 0.45):
                stack.append((x2, y2, direction + turn + rng.uniform(-0.2, 0.2), length * 0.72, depth - 1))
    return blur(layer, 0.6 + size / 900)


def _spine(size: int) -> np.ndarray:
    """Vertebral column: bodies, pedicles and disc spaces, faint through the mediastinum."""
    layer = 0.5 * fill_polygon(size, np.array([[0.465, 0.0], [0.535, 0.0], [0.535, 1.0], [0.465, 1.0]]))
    scale = size * 16
    for k in range(22):
        y = 0.02 + k * 0.046
        cv2.ellipse(layer, (int(0.5 * scale), int(y * scale)), (int(0.033 * scale), int(0.018 * scale)),
                    0, 0, 360, 0.9, -1, cv2.LINE_AA, shift=4)
        for dx in (-0.022, 0.022):
            cv2.ellipse(layer, (int((0.5 + dx) * scale), int((y - 0.004) * scale)),
                        (int(0.007 * scale), int(0.009 * scale)), 0, 0, 360, 1.2, -1, cv2.LINE_AA, shift=4)
    return blur(layer, size * 0.003)


def phantom_anatomy(rng: np.random.Generator, size: int, view: str) -> Anatomy:
    """Draw one patient's chest (body, lungs, heart, diaphragm, ribs, clavicles, spine, scapulae, vessels).

    Args:
        rng: patient-level random generator (anatomy varies per patient).
        size: image side in pixels.
        view: "PA" or "AP" (AP: magnified heart, higher clavicles, scapulae over the lungs).

    Returns:
        The patient's :class:`Anatomy`.
    """
    ap = view == "AP"
    apex_y = rng.uniform(0.10, 0.14) + (0.02 if ap else 0.0)
    cp_y = rng.uniform(0.74, 0.80) - (0.03 if ap else 0.0)
    lateral = rng.uniform(0.37, 0.42)
    medial = rng.uniform(0.06, 0.075)
    dome = {"right": cp_y - rng.uniform(0.08, 0.11)}
    dome["left"] = dome["right"] + rng.uniform(0.0, 0.03)
    soft = size * 0.004
    lung_fields, boxes, hila = {}, {}, {}
    for side, sign in (("right", -1.0), ("left", 1.0)):
        lung_fields[side] = fill_polygon(size, _lung_outline(sign, apex_y, cp_y, lateral, medial, dome[side]), soft)
        boxes[side] = (0.5 + sign * medial, 0.5 + sign * lateral, apex_y, cp_y)
        hila[side] = (0.5 + sign * rng.uniform(0.08, 0.10), apex_y + 0.36 * (cp_y - apex_y))
    heart = (0.5 + rng.uniform(0.03, 0.045), dome["left"] - rng.uniform(0.05, 0.07),
             rng.uniform(0.125, 0.145) * (1.1 if ap else 1.0), rng.uniform(0.115, 0.13), rng.uniform(-25, -10))
    heart_mask = fill_ellipse(size, heart[:2], heart[2:4], heart[4], soft)
    knob = fill_ellipse(size, (0.5 + medial + 0.012, apex_y + 0.17), (0.035, 0.03), 0, soft)
    uncovered = np.clip(1.0 - heart_mask - knob, 0.0, 1.0)
    lungs = {side: mask * uncovered for side, mask in lung_fields.items()}

    lung_air = lungs["left"] + lungs["right"]
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size
    air_depth = 1.1 - 0.25 * np.clip((coords[:, None] - apex_y) / (cp_y - apex_y), 0.0, 1.0)  # more air up high
    markings = _vessels(size, rng, hila) * 0.075 * lung_air
    parenchyma = 0.02 * smooth_noise(rng, size, 40) * lung_air
    hilar = sum(fill_ellipse(size, hilum, (0.028, 0.05), 0, size * 0.012) for hilum in hila.values())
    rib_cage = blur(cv2.dilate(lung_fields["left"] + lung_fields["right"], np.ones((size // 10,) * 2, np.uint8)),
                    size * 0.015)
    ribs = _ribs(size, rng, apex_y, lateral) * rib_cage * (0.45 + 0.55 * lung_air)
    body = _body(size, rng)
    gastric_bubble = fill_ellipse(size, (0.64, dome["left"] + 0.045), (0.05, 0.028), 0, size * 0.006)
    density = (_soft_tissue(size, rng, body, cp_y) - LUNG_CONTRAST * lung_air * air_depth
               + markings + parenchyma + 0.1 * hilar * lung_air + ribs
               + (0.16 * _shoulder_girdle(size, apex_y, ap) + 0.08 * _spine(size)) * body - 0.12 * gastric_bubble)
    return Anatomy(density.astype(np.float32), lungs, lung_fields, markings.astype(np.float32), boxes, heart, hila,
                   float(np.median(density[heart_mask > 0.9])))


def _soft_tissue(size: int, rng: np.random.Generator, body: np.ndarray, cp_y: float) -> np.ndarray:
    """Soft-tissue density: thickest through the mediastinum and abdomen; breast shadows for half the patients."""
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size
    central = np.cos(np.clip(np.abs(coords[None, :] - 0.5) * 3.4, 0, np.pi / 2))
    thickness = 0.42 + 0.24 * central + 0.08 * coords[:, None]
    if rng.random() < 0.5:
        for sign in (-1.0, 1.0):
            thickness = thickness + 0.07 * fill_ellipse(size, (0.5 + sign * 0.25, cp_y - 0.03), (0.18, 0.13), 0,
                                                        size * 0.02)
    return thickness * body


def _shoulder_girdle(size: int, apex_y: float, ap: bool) -> np.ndarray:
    """Clavicles, scapulae (over the lungs on AP films) and humeral heads."""
    layer = np.zeros((size, size), np.float32)
    clavicle_y = apex_y + (0.02 if ap else 0.045)
    t = np.linspace(0, 1, 16)
    for sign in (-1.0, 1.0):
        rise = (0.015 if ap else 0.05) * t
        draw_curve(layer, np.stack([0.5 + sign * (0.045 + 0.30 * t), clavicle_y + 0.02 * np.sin(np.pi * t) - rise], 1),
                   size * 0.024)
        tip = 0.5 + sign * (0.26 if ap else 0.36)
        scapula = np.array([[tip, apex_y + 0.04], [0.5 + sign * 0.47, apex_y + 0.02],
                            [0.5 + sign * 0.44, apex_y + 0.36]])
        layer += 0.35 * fill_polygon(size, scapula, size * 0.01)
        layer += 0.8 * fill_ellipse(size, (0.5 + sign * 0.50, apex_y + 0.02), (0.07, 0.075), 0, size * 0.004)
    return blur(layer, 1.0)


def _body(size: int, rng: np.random.Generator) -> np.ndarray:
    """Soft mask of the trunk, neck and shoulders (air outside)."""
    half = rng.uniform(0.44, 0.49)
    neck = rng.uniform(0.09, 0.12)
    outline = np.array([
        [0.5 - neck, -0.01], [0.5 + neck, -0.01], [0.5 + neck + 0.03, 0.05], [0.5 + half - 0.05, 0.08],
        [0.5 + half + 0.05, 0.13], [0.5 + half, 0.30], [0.5 + half - 0.01, 0.65], [0.5 + half + 0.01, 1.01],
        [0.5 - half - 0.01, 1.01], [0.5 - half + 0.01, 0.65], [0.5 - half, 0.30], [0.5 - half - 0.05, 0.13],
        [0.5 - half + 0.05, 0.08], [0.5 - neck - 0.03, 0.05],
    ])
    return fill_polygon(size, outline, size * 0.02)


def background_anatomy(gray: np.ndarray, size: int) -> Anatomy:
    """Anatomy from a real radiograph: its pixels as the density, lung fields from fixed relative zones.

    The film is resized to a square. No segmentation is attempted: the lung fields are the phantom's mean
    outline (apex at 12%, costophrenic angles at 77% of the height, hemithoraces 5-40% of the width either
    side of the midline), which fits centred frontal films; the vessels are the film's fine detail inside them.

    Args:
        gray: (H, W) float array in [0, 1].
        size: output side in pixels.
    """
    density = cv2.resize(np.asarray(gray, np.float32), (size, size), interpolation=cv2.INTER_AREA)
    apex_y, cp_y, lateral, medial = 0.12, 0.77, 0.40, 0.05
    dome = {"right": 0.675, "left": 0.69}
    soft = size * 0.01
    lung_fields, boxes, hila = {}, {}, {}
    for side, sign in (("right", -1.0), ("left", 1.0)):
        lung_fields[side] = fill_polygon(size, _lung_outline(sign, apex_y, cp_y, lateral, medial, dome[side]), soft)
        boxes[side] = (0.5 + sign * medial, 0.5 + sign * lateral, apex_y, cp_y)
        hila[side] = (0.5 + sign * 0.09, apex_y + 0.36 * (cp_y - apex_y))
    heart = (0.535, 0.63, 0.135, 0.12, -18.0)
    heart_mask = fill_ellipse(size, heart[:2], heart[2:4], heart[4], soft)
    lungs = {side: mask * (1.0 - heart_mask) for side, mask in lung_fields.items()}
    detail = np.clip(density - blur(density, size * 0.008), 0.0, None)
    return Anatomy(density, lungs, lung_fields, (detail * (lungs["left"] + lungs["right"])).astype(np.float32),
                   boxes, heart, hila, float(np.median(density[heart_mask > 0.9])))
