"""Decoding image bytes from untrusted datasets and requests: never allocate what a lying header asks for.

An image whose header declares more than ``MAX_IMAGE_PIXELS`` pixels is not decoded: decoding allocates what
the header says, and a 400 KB PNG can declare 20000 x 20000 pixels.
"""

from __future__ import annotations

import io
import struct
import warnings

import cv2
import numpy as np

MAX_IMAGE_PIXELS = 1 << 25  # 33.5 M pixels, about 100 MB decoded in colour: a 8000 x 4000 scene photo passes
_PNG = b"\x89PNG\r\n\x1a\n"
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # start-of-frame markers (not DHT, JPG, DAC)


def decode_image(data: bytes, grayscale: bool = False) -> np.ndarray | None:
    """BGR (or grayscale) image, or None when the bytes do not decode to a non-empty image or declare more
    than ``MAX_IMAGE_PIXELS`` pixels (``oversized``)."""
    if not data or oversized(data):
        return None
    return imdecode(data, grayscale)


def imdecode(data: bytes, grayscale: bool) -> np.ndarray | None:
    flags = cv2.IMREAD_GRAYSCALE if grayscale else cv2.IMREAD_COLOR
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error:  # OpenCV's own checks (its pixel limit, a bad header) raise instead of returning None
        return None
    if image is None or image.size == 0:
        return None
    return image


def oversized(data: bytes) -> str | None:
    """Why the image must not be decoded, or None: its header declares more than ``MAX_IMAGE_PIXELS``
    pixels, which decoding would allocate however small the file. PNG's IHDR and a JPEG's start of frame are
    read here (a microsecond); other formats' headers by Pillow, which opens lazily without decoding."""
    if data.startswith(_PNG):
        size = struct.unpack_from(">II", data, 16) if data[12:16] == b"IHDR" and len(data) >= 24 else None
    elif data.startswith(b"\xff\xd8"):
        size = _jpeg_size(data)
    else:
        return _pillow_oversized(data)
    return _over_limit(size)


def _over_limit(size: tuple[int, int] | None) -> str | None:
    if size is not None and size[0] * size[1] > MAX_IMAGE_PIXELS:
        return f"its header declares {size[0]} x {size[1]} pixels, over the {MAX_IMAGE_PIXELS}-pixel limit"
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's start of frame, found by walking the segments before it as libjpeg does
    (stray bytes before a marker passed over); None when the scan or the end comes first (libjpeg fails too)."""
    at, end = 2, len(data) - 9
    while at <= end:
        if data[at] != 0xFF:  # stray bytes: on to the next marker
            at = data.find(b"\xff", at)
            if at < 0:
                return None
            continue
        marker = data[at + 1]
        if marker in _JPEG_SOF:
            height, width = struct.unpack_from(">HH", data, at + 5)
            return width, height
        if marker in (0xDA, 0xD9):
            return None
        if marker == 0xFF:  # a fill byte
            at += 1
        elif 0xD0 <= marker <= 0xD8 or marker in (0x00, 0x01):  # markers without a length
            at += 2
        else:
            at += 2 + (data[at + 2] << 8 | data[at + 3])
    return None


def _pillow_oversized(data: bytes) -> str | None:
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as image:
                return _over_limit(image.size)
        except Image.DecompressionBombError as err:  # over twice Pillow's own limit, itself above ours
            return str(err)
        except Exception:  # not an image Pillow knows; OpenCV will say whether it decodes
            return None
