"""Drawing findings as density deltas on a patient's anatomy, at their stated location, level and type.

Each renderer returns an (S, S) float32 delta in the canonical frame; a finding's shape is drawn from a
generator seeded by the patient and the finding (name and location), so the same finding keeps its shape
across visits while its extent follows its level. Sides are the patient's (left = viewer's right).
"""

from __future__ import annotations

import zlib

import cv2
import numpy as np

from diffvqa_core.data.findings import Finding, severity, sides
from diffvqa_core.data.phantom import Anatomy, blur, fill_ellipse, smooth_noise

# Height (fraction of the lung's height) and lateral position (0 medial, 1 lateral) of each lung zone.
_ZONES = {"apical": (0.08, 0.45), "upper": (0.27, 0.55), "middle": (0.5, 0.55), "lower": (0.72, 0.55),
          "basilar": (0.86, 0.55)}


def _zone_centre(anatomy: Anatomy, side: str, zone: str) -> tuple[float, float]:
    if zone == "retrocardiac":
        cx, cy, half_width, half_height, _ = anatomy.heart
        return cx + 0.45 * half_width, cy + 0.2 * half_height
    x_medial, x_lateral, y_apex, y_base = anatomy.boxes[side]
    height, across = _ZONES[zone]
    return x_medial + across * (x_lateral - x_medial), y_apex + height * (y_base - y_apex)


def _places(location: str) -> list[tuple[str, str]]:
    """(side, zone) pairs of a location phrase such as "left lower lung", "bibasilar", "retrocardiac"."""
    if location == "retrocardiac":
        return [("left", "retrocardiac")]
    zone = next((z for z in _ZONES if z in location), "lower")  # "bibasilar" contains "basilar"
    return [(side, zone) for side in sorted(sides(location))]


def _blob(anatomy: Anatomy, centre, radius: float, rng: np.random.Generator, patchiness: float) -> np.ndarray:
    """Soft, irregular blob in [0, 1] (a thresholded noisy Gaussian)."""
    xs, ys = anatomy.grid
    envelope = np.exp(-((xs - centre[0]) ** 2 + (ys - centre[1]) ** 2) / (2 * radius ** 2))
    texture = np.clip(smooth_noise(rng, anatomy.size, 14), -0.3, 1.0)  # patchy, rarely with holes
    return np.clip((envelope * (1.0 + patchiness * texture) - 0.35) / 0.35, 0.0, 1.0)


# Least density that fluid, or a larger heart, adds where it fills lung. On a phantom aerated lung lies ~0.3 below
# soft tissue and this floor never binds; on a bright bedside film the lung may already be near the heart's level,
# and without the floor an effusion or a larger heart drew so faint a change that 38-40% of them were invisible
# (change area under a fifth of the same finding's on a phantom: `python -m train synth --seed 2027`, with and
# without --backgrounds, one-change pairs).
MIN_FILL_DENSITY = 0.12


def _to_soft_tissue(anatomy: Anatomy) -> np.ndarray:
    """Density that brings each pixel up to soft-tissue (heart) level, for fluid and heart filling lung."""
    return np.clip(anatomy.soft_tissue - anatomy.density, MIN_FILL_DENSITY, None)


def _lung_of(anatomy: Anatomy, side: str, zone: str) -> np.ndarray:
    """Where a finding of this zone shows: aerated lung, or (retrocardiac) at half strength behind the heart."""
    return 0.5 * anatomy.lung_fields[side] if zone == "retrocardiac" else anatomy.lungs[side]


def pleural_effusion(f: Finding, anatomy: Anatomy, rng: np.random.Generator) -> np.ndarray:
    """Fluid at the base: a meniscus rising laterally and blunting the costophrenic angle (layering:
    a haze that thickens towards the base)."""
    xs, ys = anatomy.grid
    delta = np.zeros_like(xs)
    s = severity(f)
    for side in sides(f.location):
        x_medial, x_lateral, y_apex, y_base = anatomy.boxes[side]
        height = (y_base - y_apex) * (0.08 + 0.32 * s)
        lateral = np.clip((xs - x_medial) / (x_lateral - x_medial), 0.0, 1.0)
        surface = y_base - height + 0.45 * height * (1.0 - lateral) ** 1.5
        if f.type == "layering":
            fluid = np.clip((ys - y_apex) / (y_base - y_apex), 0.0, 1.0) ** 2 * (0.35 + 0.5 * s)
        else:
            fluid = 0.5 + 0.5 * np.tanh((ys - surface) / 0.012)
        delta += 0.95 * fluid * anatomy.lungs[side] * _to_soft_tissue(anatomy)
    return delta


def pneumothorax(f: Finding, anatomy: Anatomy, rng: np.random.Generator) -> np.ndarray:
    """Lucent rim without vessels along the apex (apicolateral: down the lateral wall), bounded by a thin
    white visceral pleural line; its depth follows the level."""
    xs, ys = anatomy.grid
    delta = np.zeros_like(xs)
    size = anatomy.size
    for side in sides(f.location):
        x_medial, x_lateral, y_apex, y_base = anatomy.boxes[side]
        inside = (anatomy.lung_fields[side] > 0.5).astype(np.uint8)
        depth = cv2.distanceTransform(inside, cv2.DIST_L2, 5) / size
        rim = (0.015 + 0.06 * severity(f))
        reach = 0.6 if "apicolateral" in f.location else 0.35
        lateral = np.clip((xs - x_medial) / (x_lateral - x_medial), 0.0, 1.0)
        along = np.clip(((y_apex + reach * (y_base - y_apex)) - ys) / 0.05, 0.0, 1.0)
        along *= np.clip(lateral * 3.0 - 0.3, 0.0, 1.0)
        air = np.clip((rim - depth) / 0.004, 0.0, 1.0) * along * inside
        line = np.exp(-((depth - rim) / 0.0025) ** 2) * along * inside
        delta += -anatomy.markings * air - 0.05 * air + 0.07 * line
    return delta


def cardiomegaly(f: Finding, anatomy: Anatomy, rng: np.random.Generator) -> np.ndarray:
    """A wider heart (mostly to the patient's left) covering lung that was aerated."""
    cx, cy, half_width, half_height, angle = anatomy.heart
    s = severity(f)
    grow = 1.12 + 0.22 * s
    soft = anatomy.size * 0.004
    normal = fill_ellipse(anatomy.size, (cx, cy), (half_width, half_height), angle, soft)
    larger = fill_ellipse(anatomy.size, (cx + 0.35 * (grow - 1) * half_width, cy + 0.01 * s),
                          (half_width * grow, half_height * (1.03 + 0.06 * s)), angle, soft)
    inset = 3 * soft / anatomy.size  # fill the old border's soft edge too, so that it leaves no seam
    core = fill_ellipse(anatomy.size, (cx, cy), (half_width - inset, half_height - inset), angle)
    covered = larger * (1.0 - core) * (anatomy.lung_fields["left"] + anatomy.lung_fields["right"])
    # The new heart border takes the density of the heart next to it (normalised convolution), not a constant.
    spread = anatomy.size * 0.04
    beside = blur(anatomy.density * normal, spread) / np.maximum(blur(normal, spread), 1e-3)
    return covered * np.clip(beside - anatomy.density, MIN_FILL_DENSITY, None)


def edema(f: Finding, anatomy: Anatomy, rng: np.random.Generator) -> np.ndarray:
    """Bilateral perihilar ("batwing") haze with a reticular texture, denser with the level."""
    xs, ys = anatomy.grid
    s = severity(f)
    spread = 0.09 + 0.06 * s
    haze = np.zeros_like(xs)
    for hx, hy in anatomy.hila.values():
        haze += np.exp(-(xs - hx) ** 2 / (2 * (spread * 1.1) ** 2) - (ys - hy - 0.04) ** 2 / (2 * (spread * 1.6) ** 2))
    reticular = 0.5 + 0.5 * smooth_noise(rng, anatomy.size, 60)
    lungs = anatomy.lungs["left"] + anatomy.lungs["right"]
    return (0.06 + 0.16 * s) * np.clip(haze, 0, 1) * (0.7 + 0.3 * reticular) * lungs


def airspace_opacity(f: Finding, anatomy: Anatomy, rng: np.random.Generator) -> np.ndarray:
    """Patchy opacity in its zone(s) (lung opacity, consolidation, pneumonia): size follows the level,
    density the kind (ground-glass faint, consolidation dense); multifocal adds smaller satellites."""
    s = severity(f)
    strength = {"consolidation": 0.30, "pneumonia": 0.26, "lung opacity": 0.22}[f.name]
    if f.type == "ground-glass":
        strength *= 0.55
    places = _places(f.location)
    delta = np.zeros_like(anatomy.grid[0])
    for side, zone in places:
        cx, cy = _zone_centre(anatomy, side, zone)
        centres = [(cx + rng.uniform(-0.02, 0.02), cy + rng.uniform(-0.02, 0.02))]
        if f.type == "multifocal":
            centres += [(cx + rng.uniform(-0.08, 0.08), cy + rng.uniform(-0.15, 0.15)) for _ in range(2)]
        for i, centre in enumerate(centres):
            radius = (0.04 + 0.05 * s) * (1.0 if i == 0 else 0.6)
            delta += strength * _blob(anatomy, centre, radius, rng, 0.9) * _lung_of(anatomy, side, zone)
    return delta


def atelectasis(f: Finding, anatomy: Anatomy, rng: np.random.Generator) -> np.ndarray:
    """Linear / plate-like band(s) near the base, longer and thicker with the level."""
    s = severity(f)
    delta = np.zeros_like(anatomy.grid[0])
    for side, zone in _places(f.location):
        cx, cy = _zone_centre(anatomy, side, zone)
        length = 0.05 + 0.05 * s
        thickness = (0.004 + 0.004 * s) * (0.7 if f.type == "linear" else 1.0)
        angle = rng.uniform(-15, 15) + (0 if f.type == "plate-like" else rng.uniform(-10, 10))
        band = fill_ellipse(anatomy.size, (cx, cy - 0.02), (length, thickness), angle, anatomy.size * 0.003)
        if s > 0.6:
            band = np.maximum(band, 0.5 * _blob(anatomy, (cx, cy + 0.01), 0.035, rng, 0.5))
        delta += 0.28 * band * _lung_of(anatomy, side, zone)
    return delta


def nodule(f: Finding, anatomy: Anatomy, rng: np.random.Generator) -> np.ndarray:
    """Small dense nodule (granuloma) or a cluster of dots (calcification)."""
    delta = np.zeros_like(anatomy.grid[0])
    for side, zone in _places(f.location):
        cx, cy = _zone_centre(anatomy, side, zone)
        cx, cy = cx + rng.uniform(-0.04, 0.04), cy + rng.uniform(-0.04, 0.04)
        dots = 1 if f.name == "granuloma" else 3
        for _ in range(dots):
            radius = rng.uniform(0.007, 0.011) if dots == 1 else rng.uniform(0.003, 0.006)
            offset = rng.uniform(-0.012, 0.012, 2) if dots > 1 else (0.0, 0.0)
            delta += 0.45 * fill_ellipse(anatomy.size, (cx + offset[0], cy + offset[1]), (radius, radius), 0,
                                         0.6)
    return delta


RENDERERS = {
    "pleural effusion": pleural_effusion, "pneumothorax": pneumothorax, "cardiomegaly": cardiomegaly,
    "edema": edema, "lung opacity": airspace_opacity, "consolidation": airspace_opacity,
    "pneumonia": airspace_opacity, "atelectasis": atelectasis, "granuloma": nodule, "calcification": nodule,
}


def findings_density(findings: dict[str, Finding], anatomy: Anatomy, patient_seed: tuple[int, ...]) -> np.ndarray:
    """Sum of the density deltas of all findings of one study (canonical frame).

    Args:
        findings: the study's findings by name.
        anatomy: the patient's anatomy.
        patient_seed: entropy identifying the patient; with the finding's name and location it seeds the shape.

    Returns:
        (S, S) float32 density delta.
    """
    delta = np.zeros_like(anatomy.density)
    for f in findings.values():
        key = zlib.crc32(f"{f.name}|{f.location}".encode())
        delta += RENDERERS[f.name](f, anatomy, np.random.default_rng([*patient_seed, key])).astype(np.float32)
    return delta
