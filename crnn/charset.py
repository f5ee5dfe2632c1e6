"""The one place that maps text to class ids and back (blank is the last class)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

DEFAULT_CHARSET = "0123456789abcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True)
class Charset:
    """Characters the model predicts; class ``len(chars)`` is the CTC blank."""

    chars: str = DEFAULT_CHARSET

    def __post_init__(self) -> None:
        if len(set(self.chars)) != len(self.chars):
            raise ValueError(f"charset has repeated characters: {self.chars!r}")

    @property
    def num_classes(self) -> int:
        """Characters plus the blank."""
        return len(self.chars) + 1

    @property
    def blank(self) -> int:
        return len(self.chars)

    def normalize(self, text: str) -> str:
        """The evaluation protocol's normalisation: lowercase, drop what is not in the charset."""
        lowered = text.lower() if self._lowercase else text
        if self._index.keys() >= set(lowered):  # the common case, at C speed: nothing to drop
            return lowered
        return "".join(c for c in lowered if c in self._index)

    def encode(self, text: str) -> list[int]:
        """Class ids of an already normalised text."""
        try:
            return [self._index[c] for c in text]
        except KeyError as err:
            raise ValueError(f"character {err.args[0]!r} of {text!r} is not in the charset") from None

    def decode(self, ids) -> str:
        return "".join(self.chars[i] for i in ids if 0 <= i < len(self.chars))

    @cached_property
    def _lowercase(self) -> bool:
        """Whether the charset has no capitals, so that labels are lowercased (the protocol's case folding)."""
        return self.chars == self.chars.lower()

    @cached_property
    def _index(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.chars)}
