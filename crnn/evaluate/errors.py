"""What a model gets wrong, most often first: whole-word errors and the character edits behind them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from difflib import SequenceMatcher


def word_errors(pairs: Iterable[tuple[str, str]], top: int = 20) -> list[tuple[str, str, int]]:
    """(ground truth, prediction, count) of the wrong (normalised) pairs, most frequent first."""
    counts = Counter((gt, pred) for gt, pred in pairs if gt != pred)
    return [(gt, pred, count) for (gt, pred), count in counts.most_common(top)]


def character_edits(pairs: Iterable[tuple[str, str]], top: int = 20) -> list[tuple[str, str, int]]:
    """(expected, read, count) of the character edits aligning each prediction to its ground truth:
    a substitution ``a -> e``, a deletion ``a -> ''`` (missed), an insertion ``'' -> e`` (extra)."""
    counts: Counter[tuple[str, str]] = Counter()
    for gt, pred in pairs:
        if gt == pred:
            continue
        for tag, i1, i2, j1, j2 in SequenceMatcher(None, gt, pred, autojunk=False).get_opcodes():
            if tag == "replace" and i2 - i1 == j2 - j1:
                counts.update(zip(gt[i1:i2], pred[j1:j2]))
            elif tag != "equal":
                counts[(gt[i1:i2], pred[j1:j2])] += 1
    return [(expected, read, count) for (expected, read), count in counts.most_common(top)]


def format_errors(name: str, words: Sequence[tuple[str, str, int]], edits: Sequence[tuple[str, str, int]]) -> str:
    lines = [f"{name}: most frequent word errors", f"{'count':>6}  {'ground truth':<26} prediction"]
    lines += [f"{count:>6}  {gt:<26} {pred or '(empty)'}" for gt, pred, count in words] or ["     -  none"]
    lines += ["", f"{name}: most frequent character edits", f"{'count':>6}  {'expected':<10} read"]
    lines += [f"{count:>6}  {expected or '(extra)':<10} {read or '(missed)'}" for expected, read, count in edits]
    return "\n".join(lines) + "\n"
