"""What the images say: English words from the Webster's Second International word list (public domain, as
the ``english-words`` package ships it), and the numbers, dates, prices and codes that scene text holds beside
words. Each word belongs to one split (:func:`crnn.data.synth.splits.word_split`)."""

from __future__ import annotations

import string
from functools import cache

import numpy as np

from crnn.data.synth.splits import check, word_split

MIN_LENGTH, MAX_LENGTH = 2, 14
# A length is drawn first, with these weights for lengths 2 to 14, then a word of that length: short words
# dominate, as on signs (drawn from the lexicon as it is, half the words would have 8 to 11 letters).
_LENGTH_WEIGHTS = np.array([4, 10, 14, 14, 13, 11, 9, 7, 5, 4, 3, 2, 1.5], dtype=float)
_KINDS = ("word", "number", "date", "price", "code")
_KIND_WEIGHTS = (0.8, 0.07, 0.05, 0.05, 0.03)
# As in many real code systems (number plates, serial numbers), codes leave out the letters that read as digits.
_CODE_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
_CASES = ("lower", "title", "upper")
_CASE_WEIGHTS = (0.4, 0.35, 0.25)


@cache
def lexicon(split: str) -> dict[int, tuple[str, ...]]:
    """The split's lexicon words, by length, sorted."""
    from english_words import get_english_words_set

    words = get_english_words_set(["web2"], alpha=True, lower=True)
    by_length: dict[int, list[str]] = {n: [] for n in range(MIN_LENGTH, MAX_LENGTH + 1)}
    for word in sorted(words):
        if MIN_LENGTH <= len(word) <= MAX_LENGTH and word_split(word) == check(split):
            by_length[len(word)].append(word)
    return {n: tuple(ws) for n, ws in by_length.items()}


def draw(split: str, rng: np.random.Generator) -> str:
    """A word or another kind of scene text of the split, in a drawn case."""
    check(split)
    while True:
        kind = _KINDS[int(rng.choice(len(_KINDS), p=_KIND_WEIGHTS))]
        text = _lexicon_word(split, rng) if kind == "word" else _MAKERS[kind](rng)
        if kind == "word" or word_split(text) == split:
            return _in_case(text, rng)


def _lexicon_word(split: str, rng: np.random.Generator) -> str:
    by_length = lexicon(split)
    length = MIN_LENGTH + int(rng.choice(len(_LENGTH_WEIGHTS), p=_LENGTH_WEIGHTS / _LENGTH_WEIGHTS.sum()))
    words = by_length[length]
    return words[int(rng.integers(len(words)))]


def _in_case(text: str, rng: np.random.Generator) -> str:
    case = _CASES[int(rng.choice(len(_CASES), p=_CASE_WEIGHTS))]
    return {"lower": text, "title": text.capitalize(), "upper": text.upper()}[case]


def _digits(rng: np.random.Generator, n: int) -> str:
    return "".join(string.digits[i] for i in rng.integers(0, 10, size=n))


def _number(rng: np.random.Generator) -> str:
    return str(int(rng.integers(0, 10 ** int(rng.integers(1, 7)))))


def _date(rng: np.random.Generator) -> str:
    day, month, year = int(rng.integers(1, 29)), int(rng.integers(1, 13)), int(rng.integers(1950, 2031))
    forms = (f"{day:02d}/{month:02d}/{year}", f"{year}-{month:02d}-{day:02d}", f"{day}.{month}.{year % 100:02d}",
             str(year))
    return forms[int(rng.integers(len(forms)))]


def _price(rng: np.random.Generator) -> str:
    amount = f"{int(rng.integers(0, 1000))}.{_digits(rng, 2)}" if rng.random() < 0.7 else str(int(rng.integers(1, 500)))
    return ("$", "€", "£", "")[int(rng.integers(4))] + amount


def _code(rng: np.random.Generator) -> str:
    parts = ["".join(_CODE_ALPHABET[i] for i in rng.integers(0, len(_CODE_ALPHABET), size=int(rng.integers(2, 5))))
             for _ in range(int(rng.integers(1, 3)))]
    return "-".join(parts)


_MAKERS = {"number": _number, "date": _date, "price": _price, "code": _code}
