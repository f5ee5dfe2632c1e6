"""What lies under the text: crops of natural photographs that ship inside packages (scikit-image's and
scikit-learn's sample images, matplotlib's sample data) and procedural textures, each source wholly in one
split; and the colours text and surface take, drawn from the split's photographs as MJSynth drew them from
natural images."""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path

import cv2
import numpy as np

from crnn.data.synth.splits import HELDOUT, TRAIN, check

_TILE = (96, 384)  # procedural tiles (height, width): crops of them are resized to each word's size
_TILES_PER_KIND = 16
_BANK_SEED = 20141204  # the tiles are resources, the same for every dataset seed


def _package_folder(module: str) -> Path:
    """Where a package is installed, without importing it (scikit-image's import is slow and not needed)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"{module} is not installed: pip install -r requirements.lock")
    return Path(spec.submodule_search_locations[0])


_FOLDERS = {"scikit-image": ("skimage", "data"), "scikit-learn": ("sklearn", "datasets/images"),
            "matplotlib": ("matplotlib", "mpl-data/sample_data")}
# Street scenes, people, animals, objects, surfaces, the sky and a microscope's view; the held-out split has a
# portrait, a table and gravel that training never shows.
PHOTOS = {
    TRAIN: (("scikit-learn", "china.jpg"), ("scikit-learn", "flower.jpg"), ("scikit-image", "astronaut.png"),
            ("scikit-image", "brick.png"), ("scikit-image", "camera.png"), ("scikit-image", "chelsea.png"),
            ("scikit-image", "coins.png"), ("scikit-image", "color.png"), ("scikit-image", "grass.png"),
            ("scikit-image", "hubble_deep_field.jpg"), ("scikit-image", "ihc.png"), ("scikit-image", "moon.png"),
            ("scikit-image", "motorcycle_left.png"), ("scikit-image", "retina.jpg"), ("scikit-image", "rocket.jpg")),
    HELDOUT: (("matplotlib", "grace_hopper.jpg"), ("scikit-image", "coffee.png"), ("scikit-image", "gravel.png")),
}
PROCEDURAL = {TRAIN: ("noise", "stripes", "grain"), HELDOUT: ("bricks",)}


@cache
def photos(split: str) -> tuple[np.ndarray, ...]:
    """The split's photographs, BGR uint8."""
    found = []
    for package, name in PHOTOS[check(split)]:
        module, folder = _FOLDERS[package]
        path = _package_folder(module) / folder / name
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise RuntimeError(f"{path}: the {package} sample image {name} is missing or unreadable")
        found.append(image)
    return tuple(found)


@cache
def tiles(split: str) -> tuple[np.ndarray, ...]:
    """The split's procedural textures: float32 tiles in [0, 1]."""
    rng = np.random.default_rng(_BANK_SEED)
    made = []
    for kind in PROCEDURAL[check(split)]:
        made += [_MAKERS[kind](rng) for _ in range(_TILES_PER_KIND)]
    return tuple(made)


@cache
def palette(split: str) -> np.ndarray:
    """Colours (BGR) sampled from the split's photographs: text and surfaces take theirs from here."""
    rng = np.random.default_rng(_BANK_SEED)
    pixels = np.concatenate([p.reshape(-1, 3) for p in photos(split)])
    return pixels[rng.integers(0, len(pixels), size=4096)].astype(np.float32)


def luma(bgr: np.ndarray) -> np.ndarray:
    return bgr[..., 0] * 0.114 + bgr[..., 1] * 0.587 + bgr[..., 2] * 0.299


def colour(split: str, rng: np.random.Generator) -> np.ndarray:
    colours = palette(split)
    return colours[int(rng.integers(len(colours)))]


def surface(split: str, height: int, width: int, base: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A float32 BGR surface of ``base`` colour, blended with a photograph crop or a procedural texture."""
    flat = np.empty((height, width, 3), np.float32)
    flat[:] = base
    kind = rng.choice(3, p=(0.3, 0.35, 0.35))
    if kind == 0:
        return flat
    if kind == 1:
        texture = _crop(photos(split)[int(rng.integers(len(photos(split))))], height, width, rng)
        texture = texture.astype(np.float32)
    else:
        tile = _crop(tiles(split)[int(rng.integers(len(tiles(split))))], height, width, rng)
        # A grey texture shades the surface's own colour.
        texture = base * (0.55 + 0.9 * tile[..., None])
    amount = float(rng.uniform(0.2, 0.6))
    return flat * (1 - amount) + texture * amount


def _crop(image: np.ndarray, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A random window of ``image`` at a random scale, resized to height x width."""
    rows, cols = image.shape[:2]
    scale = float(rng.uniform(0.3, 1.0))
    crop_h = max(4, min(rows, int(rows * scale * 0.5)))
    crop_w = max(4, min(cols, int(crop_h * width / max(height, 1))))
    y = int(rng.integers(0, rows - crop_h + 1))
    x = int(rng.integers(0, cols - crop_w + 1))
    return cv2.resize(image[y : y + crop_h, x : x + crop_w], (width, height), interpolation=cv2.INTER_LINEAR)


def _noise(rng: np.random.Generator) -> np.ndarray:
    """Fractal value noise: octaves of upsampled random grids."""
    height, width = _TILE
    out = np.zeros(_TILE, np.float32)
    for octave in range(1, 6):
        cells = 2 ** octave
        grid = rng.random((cells, cells * width // height)).astype(np.float32)
        out += cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC) / 2 ** octave
    return _normalise(out)


def _stripes(rng: np.random.Generator) -> np.ndarray:
    height, width = _TILE
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    period = rng.uniform(4, 40)
    wave = np.sin((x * np.cos(angle) + y * np.sin(angle)) * 2 * np.pi / period)
    return _normalise(wave + 0.3 * _noise(rng))


def _grain(rng: np.random.Generator) -> np.ndarray:
    """Wood-like rings around a far centre, warped by noise."""
    height, width = _TILE
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    cy, cx = rng.uniform(-3, 4) * height, rng.uniform(-1, 2) * width
    radius = np.hypot(y - cy, x - cx) + 25 * _noise(rng)
    return _normalise(np.sin(radius * 2 * np.pi / rng.uniform(5, 20)))


def _bricks(rng: np.random.Generator) -> np.ndarray:
    """Courses of bricks with mortar lines, each brick its own shade."""
    height, width = _TILE
    course = int(rng.integers(10, 30))
    brick = int(course * rng.uniform(1.8, 3.2))
    out = np.empty(_TILE, np.float32)
    for top in range(0, height, course):
        offset = (top // course % 2) * brick // 2
        for left in range(-offset, width, brick):
            out[top : top + course, max(left, 0) : left + brick] = rng.uniform(0.4, 0.9)
        out[top : top + 2] = 0.1
        for left in range(-offset, width, brick):
            out[top : top + course, max(left, 0) : max(left, 0) + 2] = 0.1
    return _normalise(out + 0.1 * _noise(rng))


def _normalise(values: np.ndarray) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    return ((values - low) / (high - low + 1e-6)).astype(np.float32)


_MAKERS = {"noise": _noise, "stripes": _stripes, "grain": _grain, "bricks": _bricks}
