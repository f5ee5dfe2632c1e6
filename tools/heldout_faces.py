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
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from crnn.charset import Charset
from crnn.data.synthetic import SyntheticSpec
from crnn.evaluate.metrics import Score, score

Row = tuple[str, str, Score]  # (family or kind, its kind or "", the score of its images)


def tally(pairs: Sequence[tuple[str, str]], faces: Sequence[tuple[str, str]], kinds: dict[str, str],
          charset: Charset, where: str) -> tuple[list[Row], list[Row], Score]:
    """(per family, per kind, all), each scored as the evaluate step scores (``crnn.evaluate.metrics.score``),
    from the benchmark's (label, reading) pairs and the drawn (word, family) of each image, in the same order."""
    if len(pairs) != len(faces):
        raise ValueError(f"{where}: {len(pairs)} samples, but {len(faces)} faces were drawn for it")
    by_family: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for index, ((label, reading), (word, family)) in enumerate(zip(pairs, faces, strict=True)):
        if charset.normalize(label) != charset.normalize(word):
            raise ValueError(f"{where}: sample {index + 1} is labelled {label!r}, but the seed draws {word!r} "
                             "there: another seed (--seed), or not the synthetic HeldOut")
        by_family[family].append((label, reading))
    by_kind: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for family, samples in by_family.items():
        by_kind[kinds[family]] += samples

    def scored(samples: list[tuple[str, str]]) -> Score:
        return score([label for label, _ in samples], [reading for _, reading in samples], charset)

    return ([(family, kinds[family], scored(by_family[family])) for family in sorted(by_family)],
            [(kind, "", scored(by_kind[kind])) for kind in sorted(by_kind)], scored(list(pairs)))


def format_tallies(families: Sequence[Row], by_kind: Sequence[Row], total: Score) -> str:
    def line(name: str, kind: str, result: Score) -> str:
        return f"{name:24} {kind:12} {result.num_samples:6} {result.correct:6} {100 * result.accuracy:8.2f}%"

    header = f"{'images':>6} {'read':>6} {'accuracy':>9}"
    return "\n".join([f"{'family':24} {'kind':12} {header}", *(line(*row) for row in families), "",
                      f"{'kind':37} {header}", *(line(*row) for row in by_kind), line("all", "", total)])


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
