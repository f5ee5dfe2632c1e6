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
        return (text.lower() if self._lowercase else text).translate(self._kept)

    def encode(self, text: str) -> list[int]:
        """Class ids of an already normalised text."""
        return list(map(ord, self._id_chars(text)))

    def encode_bytes(self, text: str) -> bytes:
        """``encode`` as bytes, one per character: for charsets of at most 256 characters (a word's record is
        made of these without a list of integers in between)."""
        return self._id_chars(text).encode("latin-1")

    def _id_chars(self, text: str) -> str:
        try:
            return text.translate(self._ids)
        except _Unknown as err:
            raise ValueError(f"character {err.args[0]!r} of {text!r} is not in the charset") from None

    def decode(self, ids) -> str:
        return "".join(self.chars[i] for i in ids if 0 <= i < len(self.chars))

    @cached_property
    def _lowercase(self) -> bool:
        """Whether the charset has no capitals, so that labels are lowercased (the protocol's case folding)."""
        return self.chars == self.chars.lower()

    @cached_property
    def _kept(self) -> _Dropping:
        """``str.translate`` table keeping the charset's characters and dropping the rest, at C speed."""
        return _Dropping({ord(c): c for c in self.chars})

    @cached_property
    def _ids(self) -> _Refusing:
        """``str.translate`` table from each character to the character whose code is its class id."""
        return _Refusing({ord(c): i for i, c in enumerate(self.chars)})


class _Unknown(Exception):  # not a LookupError, which str.translate takes as "leave the character as it is"
    pass


class _Dropping(dict):
    def __missing__(self, code: int) -> None:
        return None  # str.translate drops it


class _Refusing(dict):
    def __missing__(self, code: int) -> None:
        raise _Unknown(chr(code))
