"""The recipe, stage by stage as MJSynth's: font rendering, border and shadow, colouring, projective
distortion, blending with a natural or procedural surface, then blur, noise and JPEG compression."""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image, ImageDraw

from crnn.data.synth import fonts, textures, words
from crnn.data.synth.splits import TRAIN, check

_GLYPH, _BORDER, _SHADOW = 0, 1, 2  # the channels of a layer stack
_MIN_CONTRAST = 80.0  # luma difference between text and surface, so that the word stays legible
_BENT = 0.8  # the share of training words whose strokes are bent (_bend_strokes)
_BEND_SCALE = (0.015, 0.045)  # the bending field's scale, in font sizes; the field itself is clipped to +-2


def draw_word(split: str, rng: np.random.Generator, bend: bool = False) -> tuple[str, np.ndarray]:
    """A word of ``split`` and its BGR uint8 image; ``bend``: see ``text_layers``."""
    text = words.draw(check(split), rng)
    return text, render_word(text, rng, split, bend)


def drawn_family(split: str, rng: np.random.Generator) -> tuple[str, str]:
    """(the word, the font family) that ``draw_word`` draws from ``rng`` in this state, without rendering:
    its first draws are the word's and then the face's (``_glyph_mask``)."""
    text = words.draw(check(split), rng)
    return text, fonts.pick(split, text, rng)[0].family


def render_word(text: str, rng: np.random.Generator, split: str = TRAIN, bend: bool = False) -> np.ndarray:
    """``text`` as a cropped word image, BGR uint8, drawn with the resources of ``split``."""
    layers = text_layers(text, rng, split, bend)
    base = textures.colour(split, rng)
    under = textures.surface(split, layers.shape[0], layers.shape[1], base, rng)
    return finish(compose(layers, under, rng, split), rng)


def text_layers(text: str, rng: np.random.Generator, split: str = TRAIN, bend: bool = False) -> np.ndarray:
    """Glyphs, border and shadow masks (float32, height x width x 3, in [0, 1]), distorted and cropped with a
    margin. ``bend``: most words' strokes bent (``_bend_strokes``), for training images; benchmarks show the
    faces as they are."""
    glyph, size, text_height = _glyph_mask(text, rng, split)
    if bend:
        glyph = _bend_strokes(glyph, size, rng)
    layers = _with_border_and_shadow(glyph, size, rng)
    return _crop_to_text(_distort(layers, text_height, rng), text_height, rng)


def _glyph_mask(text: str, rng: np.random.Generator, split: str) -> tuple[np.ndarray, int, int]:
    """(the text drawn white on black in a drawn face, float32; the face's size; the text's height)."""
    face, weight, size = fonts.pick(check(split), text, rng)
    font = fonts.load(face.path, weight, size)
    left, top, right, bottom = font.getbbox(text)
    if right <= left or bottom <= top:
        raise ValueError(f"{text!r} draws nothing")
    pad = size // 4 + 2  # room for a border or a shadow; the distortion makes its own
    canvas = Image.new("L", (right - left + 2 * pad, bottom - top + 2 * pad), 0)
    ImageDraw.Draw(canvas).text((pad - left, pad - top), text, font=font, fill=255)
    return np.asarray(canvas, np.float32) / 255.0, size, bottom - top


def _bend_strokes(glyph: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Most words' strokes displaced by a smooth random field (an elastic distortion, Simard et al. 2003): the
    face drawn becomes one that no package holds, bent a little at the scale of a letter's parts."""
    if rng.random() >= _BENT:
        return glyph
    height, width = glyph.shape
    cell = max(4.0, size / 4)  # the field varies over about a quarter of the face's size
    coarse = rng.standard_normal((2, int(height / cell) + 2, int(width / cell) + 2)).astype(np.float32)
    field = [cv2.resize(np.clip(c, -2, 2), (width, height), interpolation=cv2.INTER_LINEAR) for c in coarse]
    scale = float(rng.uniform(*_BEND_SCALE)) * size
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    return cv2.remap(glyph, xs + field[0] * scale, ys + field[1] * scale, cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def _with_border_and_shadow(glyph: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """The layer stack: the glyphs, an outline around them (a quarter of the words), a soft shadow (a fifth)."""
    layers = np.zeros(glyph.shape + (3,), np.float32)
    layers[..., _GLYPH] = glyph
    if rng.random() < 0.25:
        radius = max(1, round(size / 24 * rng.uniform(0.8, 2.0)))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        layers[..., _BORDER] = cv2.dilate(glyph, kernel)
    if rng.random() < 0.2:
        dx, dy = (int(v) for v in rng.integers(-size // 8, size // 8 + 1, size=2))
        shifted = np.roll(glyph, (dy, dx), axis=(0, 1))
        layers[..., _SHADOW] = cv2.GaussianBlur(shifted, (0, 0), max(0.5, size / 24))
    return layers


def _distort(layers: np.ndarray, text_height: int, rng: np.random.Generator) -> np.ndarray:
    """A random projective transform with a small rotation, onto a canvas that holds all of it."""
    height, width = layers.shape[:2]
    corners = np.float32([[0, 0], [width, 0], [width, height], [0, height]])
    jitter = rng.uniform(-0.2, 0.2, size=(4, 2)).astype(np.float32) * text_height
    angle = np.deg2rad(rng.uniform(-3.0, 3.0))
    rotation = np.float32([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    centre = np.float32([width / 2, height / 2])
    moved = (corners - centre) @ rotation.T + centre + jitter
    moved -= moved.min(axis=0)
    size = np.ceil(moved.max(axis=0)).astype(int) + 1
    matrix = cv2.getPerspectiveTransform(corners, moved.astype(np.float32))
    return cv2.warpPerspective(layers, matrix, (int(size[0]), int(size[1])), flags=cv2.INTER_LINEAR)


def _crop_to_text(layers: np.ndarray, text_height: int, rng: np.random.Generator) -> np.ndarray:
    """The inked area with margins like those of annotated word boxes: tight to a third of the text height."""
    ink = (cv2.cvtColor(layers, cv2.COLOR_BGR2GRAY) > 0.02).astype(np.uint8)
    x, y, width, height = cv2.boundingRect(ink)
    top, bottom = (rng.uniform(0.05, 0.3, size=2) * text_height).astype(int)
    left, right = (rng.uniform(0.0, 0.35, size=2) * text_height).astype(int)
    edge = text_height  # wider than any margin, so that a margin may run past the canvas
    padded = cv2.copyMakeBorder(layers, edge, edge, edge, edge, cv2.BORDER_CONSTANT, value=0)
    return padded[y + edge - top : y + height + edge + bottom, x + edge - left : x + width + edge + right]


def compose(layers: np.ndarray, under: np.ndarray, rng: np.random.Generator, split: str = TRAIN) -> np.ndarray:
    """The layers painted over ``under`` (float32 BGR of the same size) in colours that contrast with what lies
    under the glyphs (not the whole surface: a texture may be light in one place and dark in another)."""
    glyph = layers[..., _GLYPH]
    beneath = np.float32(cv2.mean(under, mask=(glyph > 0.5).astype(np.uint8))[:3])
    ink = _contrasting(float(textures.luma(beneath)), split, rng)
    image = under
    if layers[..., _SHADOW].max() > 0:
        alpha = layers[..., _SHADOW, None] * rng.uniform(0.4, 0.8)
        image = image * (1 - alpha) + beneath * 0.25 * alpha
    if layers[..., _BORDER].max() > 0:
        rim = _contrasting(float(textures.luma(ink)), split, rng)
        alpha = layers[..., _BORDER, None]
        image = image * (1 - alpha) + rim * alpha
    return image * (1 - glyph[..., None]) + ink * glyph[..., None]


def _contrasting(luma: float, split: str, rng: np.random.Generator) -> np.ndarray:
    """A palette colour far enough in luma from ``luma``; black or white where none is drawn in a few tries."""
    for _ in range(8):
        candidate = textures.colour(split, rng)
        if abs(float(textures.luma(candidate)) - luma) >= _MIN_CONTRAST:
            return candidate
    return np.full(3, 0.0 if luma > 127 else 255.0, np.float32)


def finish(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Camera and compression artefacts: blur or a lower resolution (both in proportion to the image's height,
    so that a small word is not blurred out of legibility), sensor noise, JPEG; uint8 out."""
    height, width = image.shape[:2]
    degrade = rng.random()
    if degrade < 0.35:
        image = cv2.GaussianBlur(image, (0, 0), float(rng.uniform(0.3, 1.2)) * min(1.0, height / 32))
    elif degrade < 0.55 and height >= 20:
        scale = float(rng.uniform(max(0.4, 16 / height), 0.8))
        small = cv2.resize(image, (max(1, int(width * scale)), int(height * scale)), interpolation=cv2.INTER_AREA)
        image = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
    # Luminance noise: one field for the three channels.
    image = image + rng.standard_normal(image.shape[:2] + (1,), dtype=np.float32) * float(rng.uniform(0.0, 8.0))
    image = np.clip(image, 0, 255, out=image).astype(np.uint8)
    if rng.random() < 0.5:
        ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(40, 96))])
        image = cv2.imdecode(encoded, cv2.IMREAD_COLOR) if ok else image
    return image
