"""Which resources belong to which split: ``train`` renders the training data and the in-distribution
benchmarks, ``heldout`` the generalisation benchmark. The two share no font family, no texture source and no
word."""

from __future__ import annotations

import zlib

TRAIN = "train"
HELDOUT = "heldout"
SPLITS = (TRAIN, HELDOUT)
_HELDOUT_WORD_SHARE = 10  # one word (or number, date, code) in ten is kept for the held-out split


def check(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown synthetic split {split!r}; choose one of {', '.join(SPLITS)}")
    return split


def word_split(label: str) -> str:
    """The split a word belongs to, by a checksum of its normalised form (so ``Hotel`` and ``HOTEL`` fall on
    the same side, and the assignment is the same on every machine)."""
    key = "".join(c for c in label.lower() if c.isalnum())
    return HELDOUT if zlib.crc32(key.encode()) % _HELDOUT_WORD_SHARE == 0 else TRAIN
