"""Typefaces: Google Fonts families as the ``fontpkg-*`` packages ship them (each under OFL-1.1 or Apache-2.0,
its licence in its package), each family wholly in one split."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources
from pathlib import Path

from PIL import ImageFont

from crnn.data.synth.splits import HELDOUT, TRAIN, check

# One or two of each kind (sans, condensed, serif, slab, mono, display, handwriting) is held out, so the
# held-out benchmark asks for every kind of face without giving the model one it has seen.
HELDOUT_FAMILIES = (
    "open-sans", "work-sans", "barlow-condensed", "merriweather", "crimson-text", "zilla-slab", "space-mono",
    "righteous", "titan-one", "cinzel", "kalam", "satisfy",
)
TRAIN_FAMILIES = (
    "abeezee", "abel", "abril-fatface", "acme", "albert-sans", "alegreya-sans", "alfa-slab-one", "alumni-sans",
    "amiri", "andada-pro", "antic-slab", "anton", "archivo", "archivo-black", "archivo-narrow", "arimo", "arvo",
    "asap", "assistant", "atkinson-hyperlegible", "baloo-2", "barlow", "barlow-semi-condensed", "be-vietnam-pro",
    "bebas-neue", "bitter", "black-ops-one", "bodoni-moda", "bricolage-grotesque", "bungee", "cabin", "cardo",
    "catamaran", "caveat", "chakra-petch", "changa-one", "chivo", "comfortaa", "cormorant", "cormorant-garamond",
    "crimson-pro", "dancing-script", "delius", "dm-mono", "dm-sans", "dm-serif-display", "dm-serif-text", "domine",
    "dosis", "eb-garamond", "encode-sans", "epilogue", "exo", "exo-2", "figtree", "fira-code", "fira-sans",
    "fira-sans-condensed", "fjalla-one", "frank-ruhl-libre", "fraunces", "fredoka", "geist", "geist-mono",
    "geologica", "gravitas-one", "great-vibes", "hammersmith-one", "hanken-grotesk", "heebo", "hind",
    "hind-siliguri", "ibm-plex-mono", "ibm-plex-sans", "ibm-plex-sans-condensed", "ibm-plex-serif", "inconsolata",
    "indie-flower", "instrument-sans", "instrument-serif", "inter", "inter-tight", "jetbrains-mono", "josefin-sans",
    "jost", "kanit", "karla", "lato", "league-spartan", "lexend", "lexend-deca", "libre-baskerville",
    "libre-franklin", "lilita-one", "literata", "lobster", "lobster-two", "lora", "luckiest-guy", "manrope",
    "marcellus", "maven-pro", "merriweather-sans", "montserrat", "mukta", "mulish", "news-cycle", "newsreader",
    "noto-sans", "noto-sans-display", "noto-serif", "nunito", "nunito-sans", "oleo-script", "onest", "orbitron",
    "oswald", "outfit", "overpass", "oxygen", "pacifico", "permanent-marker", "play", "playfair-display",
    "plus-jakarta-sans", "poppins", "press-start-2p", "prompt", "pt-sans", "pt-sans-narrow", "pt-serif",
    "public-sans", "questrial", "quicksand", "rajdhani", "raleway", "red-hat-display", "red-hat-text",
    "rethink-sans", "roboto", "roboto-condensed", "roboto-flex", "roboto-mono", "roboto-slab", "rowdies", "rubik",
    "russo-one", "saira", "saira-condensed", "sanchez", "sarabun", "schibsted-grotesk", "shadows-into-light",
    "share-tech", "signika", "slabo-27px", "smooch-sans", "sofia-sans", "sora", "source-code-pro", "source-sans-3",
    "source-serif-4", "space-grotesk", "spectral", "syne", "teko", "titillium-web", "unbounded", "urbanist",
    "varela-round", "viga", "vollkorn", "yanone-kaffeesatz", "yellowtail",
)
FAMILIES = {TRAIN: TRAIN_FAMILIES, HELDOUT: HELDOUT_FAMILIES}
_WEIGHTS = (400, 500, 600, 700, 800)  # a variable face's weight axis is set to one of these (no thin strokes)
_SIZES = (26, 32, 38, 44)  # rendering sizes in pixels; the image is scaled to its final height afterwards


@dataclass(frozen=True)
class Face:
    """One font file, with its weight range when the file is a variable font."""

    family: str
    path: Path
    weights: tuple[int, ...] = ()


@cache
def faces(split: str) -> tuple[tuple[Face, ...], ...]:
    """The faces of each of the split's families, in a fixed order."""
    try:
        import fontpkg
    except ImportError:
        raise RuntimeError("the synthetic engine's fonts are not installed: pip install -r requirements.lock "
                           "(the fontpkg-* packages)") from None
    installed = fontpkg.families()
    missing = [slug for slug in FAMILIES[check(split)] if slug not in installed]
    if missing:
        raise RuntimeError(f"font families missing: {', '.join(missing)}; install the pinned packages "
                           f"(pip install -r requirements.lock: fontpkg-{missing[0]} ...)")
    return tuple(tuple(Face(slug, file.path, _weights(file))
                       for file in sorted(installed[slug].files, key=lambda f: f.path.name))
                 for slug in FAMILIES[split])


def _weights(file) -> tuple[int, ...]:
    if not file.variable:
        return ()
    return tuple(w for w in _WEIGHTS if file.wght_min <= w <= file.wght_max)


@cache
def kinds(split: str) -> dict[str, tuple[int, ...]]:
    """The split's families (indices into ``faces(split)``) by the kind Google Fonts files each under
    (``SANS_SERIF``, ``SERIF``, ``DISPLAY``, ``HANDWRITING``, ``MONOSPACE``: its package's ``category``)."""
    grouped: dict[str, list[int]] = {}
    for index, family in enumerate(faces(split)):  # first: it names a family that is not installed
        grouped.setdefault(_kind(family[0].family), []).append(index)
    return {kind: tuple(grouped[kind]) for kind in sorted(grouped)}


def family_kinds(split: str) -> dict[str, str]:
    """Each of the split's families and its kind (``kinds``)."""
    return {faces(split)[index][0].family: kind for kind, indices in kinds(split).items() for index in indices}


def _kind(slug: str) -> str:
    # fontpkg's Family does not carry the category, but every family's package ships it in its metadata.json.
    metadata = resources.files(f"fontpkg_{slug.replace('-', '_')}") / "metadata.json"
    return json.loads(metadata.read_text(encoding="utf-8"))["category"][0]


def pick(split: str, text: str, rng) -> tuple[Face, int | None, int]:
    """A face that draws every character of ``text``, its weight (None for a static face) and a rendering size.

    A kind of face is drawn evenly, then a family of that kind (not file by file: some families ship 18 files,
    some one). Families drawn evenly would follow what the packages hold, three sans serif in five and a
    twentieth each of handwriting and monospace; both splits ask for every kind alike."""
    families, grouped = faces(split), list(kinds(split).values())
    for _ in range(100):
        kind = grouped[int(rng.integers(len(grouped)))]
        family = families[kind[int(rng.integers(len(kind)))]]
        face = family[int(rng.integers(len(family)))]
        if set(map(ord, text)) <= _characters(face.path):
            weight = int(rng.choice(face.weights)) if face.weights else None
            return face, weight, int(rng.choice(_SIZES))
    raise ValueError(f"no {split} font draws every character of {text!r}")


@cache
def _characters(path: Path) -> frozenset[int]:
    """The code points the face has glyphs for: a missing one would be drawn as a box that no label holds."""
    from fontTools.ttLib import TTFont

    with TTFont(path, lazy=True) as font:
        return frozenset(font.getBestCmap() or ())


@lru_cache(maxsize=2048)
def load(path: Path, weight: int | None, size: int) -> ImageFont.FreeTypeFont:
    font = ImageFont.truetype(str(path), size, layout_engine=ImageFont.Layout.BASIC)
    if weight is not None:
        axes = font.get_variation_axes()
        font.set_variation_by_axes([weight if axis["name"] in (b"Weight", "Weight") else axis["default"]
                                    for axis in axes])
    return font
