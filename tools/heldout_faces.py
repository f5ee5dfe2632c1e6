"""HeldOut's accuracy face by face: which of the fonts training never saw an exported model reads, and which not.

The pipeline scores HeldOut as one figure. This evaluates the model on the converted benchmark with the
pipeline's own evaluation (``evaluate_dataset``), then tells each image's font family by drawing its word and
face again from the seed the benchmark was rendered with (``crnn.data.synthetic.heldout_faces``). A word that
differs from the benchmark's label means another seed (or not the synthetic HeldOut), and is an error.

Usage: ``python -m tools.heldout_faces EXPORT_DIR HELDOUT_DIR [--seed 0]``, e.g. after one ``make run``:
``python -m tools.heldout_faces outputs/pipeline_root/crnn-training-*/train/model/export
outputs/datasets/converted/*/HeldOut/test``
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from crnn.charset import Charset
from crnn.data.synthetic import SyntheticSpec


@dataclass(frozen=True)
class Tally:
    name: str
    kind: str
    images: int
    read: int

    @property
    def accuracy(self) -> float:
        return 100 * self.read / self.images


def tally(pairs: Sequence[tuple[str, str]], faces: Sequence[tuple[str, str]], kinds: dict[str, str],
          charset: Charset, where: str) -> tuple[list[Tally], list[Tally], Tally]:
    """(per family, per kind, all) from the benchmark's (label, reading) pairs and the drawn (word, family) of
    each image, in the same order."""
    if len(pairs) != len(faces):
        raise ValueError(f"{where}: {len(pairs)} samples, but {len(faces)} faces were drawn for it")
    images, read = Counter(), Counter()
    for index, ((label, reading), (word, family)) in enumerate(zip(pairs, faces, strict=True)):
        if charset.normalize(label) != charset.normalize(word):
            raise ValueError(f"{where}: sample {index + 1} is labelled {label!r}, but the seed draws {word!r} "
                             "there: another seed (--seed), or not the synthetic HeldOut")
        correct = charset.normalize(label) == charset.normalize(reading)
        for key in (("family", family), ("kind", kinds[family])):
            images[key] += 1
            read[key] += correct
    families = [Tally(name, kinds[name], images[("family", name)], read[("family", name)])
                for name in sorted({name for group, name in images if group == "family"})]
    by_kind = [Tally(name, name, images[("kind", name)], read[("kind", name)])
               for name in sorted({name for group, name in images if group == "kind"})]
    return families, by_kind, Tally("all", "", len(pairs), sum(t.read for t in families))


def format_tallies(families: Sequence[Tally], by_kind: Sequence[Tally], total: Tally) -> str:
    lines = [f"{'family':24} {'kind':12} {'images':>6} {'read':>6} {'accuracy':>9}"]
    lines += [f"{t.name:24} {t.kind:12} {t.images:6} {t.read:6} {t.accuracy:8.2f}%" for t in families]
    lines += ["", f"{'kind':37} {'images':>6} {'read':>6} {'accuracy':>9}"]
    lines += [f"{t.name:37} {t.images:6} {t.read:6} {t.accuracy:8.2f}%" for t in by_kind + [total]]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("export", type=Path, help="an exported model (a train step's model/export)")
    parser.add_argument("heldout", type=Path, help="the converted HeldOut benchmark (<converted>/HeldOut/test)")
    parser.add_argument("--seed", type=int, default=SyntheticSpec().seed,
                        help="the seed the data was rendered with (the pipeline's seed; default: %(default)s)")
    args = parser.parse_args(argv)

    from crnn.data.synth.fonts import family_kinds
    from crnn.data.synth.splits import HELDOUT
    from crnn.data.synthetic import heldout_faces
    from crnn.evaluate.benchmark import evaluate_dataset
    from crnn.model.export import Recognizer

    recognizer = Recognizer(args.export)
    result = evaluate_dataset(recognizer.model, args.heldout, recognizer.recipe.model)
    pairs = [(p.ground_truth, p.prediction) for p in result.predictions]
    faces = heldout_faces(args.seed, len(pairs))
    report = format_tallies(*tally(pairs, faces, family_kinds(HELDOUT), recognizer.charset, str(args.heldout)))
    print(report)
    return report


if __name__ == "__main__":
    try:
        main()
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
