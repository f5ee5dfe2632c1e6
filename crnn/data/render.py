"""Renders word images the way synthetic-text engines do: a font, a size, colours, blur, noise, a tilt.

Fonts are TrueType faces drawn by Pillow (the DejaVu, STIX and Computer Modern faces that ship inside
matplotlib, so the same seed gives the same images on every machine) and OpenCV's Hershey stroke fonts.
Every random choice comes from the ``numpy.random.Generator`` passed in, so a (seed, index) pair always gives
the same image.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Faces that draw the Latin letters and digits at their usual code points.
_TRUETYPE_FACES = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf",
    "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf", "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf",
    "cmr10.ttf", "cmss10.ttf", "cmtt10.ttf", "cmb10.ttf",
)
_HERSHEY_FACES = (
    cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX,
    cv2.FONT_HERSHEY_TRIPLEX, cv2.FONT_HERSHEY_PLAIN,
)
_VOWELS = "aeiouy"
_CONSONANTS = "bcdfghjklmnprstvwxz"


@lru_cache(maxsize=1)
def truetype_fonts() -> tuple[Path, ...]:
    """The bundled TrueType faces that are present."""
    import matplotlib

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    fonts = tuple(folder / name for name in _TRUETYPE_FACES if (folder / name).is_file())
    if not fonts:
        raise RuntimeError(f"no TrueType fonts found in {folder}; is matplotlib installed?")
    return fonts


@lru_cache(maxsize=256)
def _truetype(path: Path, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(path), size)


def random_word(rng: np.random.Generator, min_len: int = 2, max_len: int = 11) -> str:
    """A pronounceable pseudo-word, a random letter-digit string or a number, in varied case."""
    kind = rng.choice(["pseudo", "alnum", "number"], p=[0.75, 0.1, 0.15])
    length = int(rng.integers(min_len, max_len + 1))
    if kind == "pseudo":
        chars = []
        while len(chars) < length:
            chars.append(rng.choice(list(_CONSONANTS)))
            chars.append(rng.choice(list(_VOWELS)))
        word = "".join(chars[:length])
    elif kind == "alnum":
        word = "".join(rng.choice(list(string.ascii_lowercase + string.digits), size=min(length, 8)))
    else:
        word = "".join(rng.choice(list(string.digits), size=min(length, 6)))
    case = rng.choice(["lower", "upper", "title"], p=[0.5, 0.25, 0.25])
    return {"lower": word, "upper": word.upper(), "title": word.capitalize()}[case]


@dataclass(frozen=True)
class Style:
    """Everything that decides how one word looks."""

    truetype: Path | None
    hershey: int
    size: int
    foreground: tuple[int, int, int]
    background: tuple[int, int, int]
    angle: float
    blur: float
    noise: float


def random_style(rng: np.random.Generator, background: tuple[int, int, int] | None = None) -> Style:
    """A random look; ``background`` fixes the background colour (text on a scene's surface)."""
    fonts = truetype_fonts()
    use_truetype = rng.random() < 0.75
    background = np.array(background) if background is not None else rng.integers(0, 256, size=3)
    foreground = rng.integers(0, 256, size=3)
    # Keep enough luminance contrast that the word is legible, as the benchmarks' words are.
    while abs(_luma(foreground) - _luma(background)) < 90:
        foreground = rng.integers(0, 256, size=3)
    return Style(
        truetype=fonts[int(rng.integers(len(fonts)))] if use_truetype else None,
        hershey=int(rng.choice(_HERSHEY_FACES)),
        size=int(rng.integers(22, 44)),
        foreground=tuple(int(c) for c in foreground),
        background=tuple(int(c) for c in background),
        angle=float(rng.uniform(-4.0, 4.0)),
        blur=float(rng.choice([0.0, rng.uniform(0.3, 1.2)], p=[0.5, 0.5])),
        noise=float(rng.uniform(0.0, 12.0)),
    )


def _luma(rgb) -> float:
    return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]


def _text_mask(text: str, style: Style) -> np.ndarray:
    """White text on black, tightly cropped, float32 in [0, 1]."""
    if style.truetype is not None:
        font = _truetype(style.truetype, style.size)
        left, top, right, bottom = font.getbbox(text)
        canvas = Image.new("L", (right - left + 4, bottom - top + 4), 0)
        ImageDraw.Draw(canvas).text((2 - left, 2 - top), text, font=font, fill=255)
        mask = np.asarray(canvas)
    else:
        scale = style.size / 30.0
        thickness = max(1, round(scale * 1.5))
        (width, height), baseline = cv2.getTextSize(text, style.hershey, scale, thickness)
        mask = np.zeros((height + baseline + 8, width + 8), np.uint8)
        cv2.putText(mask, text, (4, height + 4), style.hershey, scale, 255, thickness, cv2.LINE_AA)
    rows, cols = np.nonzero(mask)
    return mask[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].astype(np.float32) / 255.0


def render_word(text: str, rng: np.random.Generator, style: Style | None = None) -> np.ndarray:
    """A BGR uint8 image of ``text`` with a small margin around it."""
    style = style or random_style(rng)
    mask = _text_mask(text, style)
    pad_y = int(rng.integers(2, 8))
    pad_x = int(rng.integers(2, 12))
    mask = cv2.copyMakeBorder(mask, pad_y, pad_y, pad_x, pad_x, cv2.BORDER_CONSTANT, value=0)
    if style.angle:
        height, width = mask.shape
        matrix = cv2.getRotationMatrix2D((width / 2, height / 2), style.angle, 1.0)
        mask = cv2.warpAffine(mask, matrix, (width, height), flags=cv2.INTER_LINEAR)
    alpha = mask[..., None]
    # Colours are RGB; OpenCV images are BGR.
    background = np.array(style.background[::-1], np.float32)
    foreground = np.array(style.foreground[::-1], np.float32)
    gradient = np.linspace(-1, 1, mask.shape[1], dtype=np.float32)[None, :, None] * rng.uniform(0, 30)
    image = (background + gradient) * (1 - alpha) + foreground * alpha
    if style.blur:
        image = cv2.GaussianBlur(image, (0, 0), style.blur)
    image = image + rng.normal(0.0, style.noise, size=image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)
