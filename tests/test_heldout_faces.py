"""tools/heldout_faces.py: HeldOut's score told apart by the font family of each image."""

from __future__ import annotations

import re

import numpy as np
import pytest

from crnn.charset import Charset
from crnn.data.synth import fonts
from crnn.data.synth.render import draw_word, drawn_family
from crnn.data.synth.splits import HELDOUT, TRAIN
from crnn.data.synthetic import heldout_faces
from tests.conftest import TINY_SPEC
from tools.heldout_faces import main, tally


@pytest.mark.parametrize("split", [TRAIN, HELDOUT])
def test_drawn_family_is_the_face_draw_word_renders(monkeypatch, split):
    used = []
    real = fonts.pick
    monkeypatch.setattr(fonts, "pick", lambda *args: used.append(real(*args)) or used[-1])
    for seed in range(15):
        text, _ = draw_word(split, np.random.default_rng([seed, 9]))
        assert drawn_family(split, np.random.default_rng([seed, 9])) == (text, used[-1][0].family)
    assert len({face.family for face, _, _ in used}) > 3  # not one family that any replay would agree with


def test_tally_counts_each_family_and_kind():
    pairs = [("Cat", "cat"), ("dog", "dag"), ("EMU", "emu"), ("42", "42")]
    faces = [("Cat", "satisfy"), ("dog", "satisfy"), ("EMU", "open-sans"), ("42", "kalam")]
    kinds = {"satisfy": "HANDWRITING", "kalam": "HANDWRITING", "open-sans": "SANS_SERIF"}
    families, by_kind, total = tally(pairs, faces, kinds, Charset(), "here")
    assert [(name, kind, t.num_samples, t.correct) for name, kind, t in families] == [
        ("kalam", "HANDWRITING", 1, 1), ("open-sans", "SANS_SERIF", 1, 1), ("satisfy", "HANDWRITING", 2, 1)]
    assert [(name, t.num_samples, t.correct) for name, _, t in by_kind] == [("HANDWRITING", 3, 2), ("SANS_SERIF", 1, 1)]
    assert (total.num_samples, total.correct, total.accuracy) == (4, 3, 0.75)


def test_the_report_covers_the_benchmark_the_pipeline_scores(trained_dir, converted_dir):
    from crnn.evaluate.benchmark import evaluate_dataset
    from crnn.model.export import Recognizer

    heldout = converted_dir / "HeldOut" / "test"
    report = main([str(trained_dir / "export"), str(heldout), "--seed", str(TINY_SPEC.seed)])
    rows = [line.split() for line in report.splitlines() if line.strip()]
    family_rows = [row for row in rows if row[0] in fonts.HELDOUT_FAMILIES]
    assert sum(int(row[2]) for row in family_rows) == TINY_SPEC.test_size
    assert {row[0] for row in family_rows} == {family for _, family in heldout_faces(TINY_SPEC.seed,
                                                                                    TINY_SPEC.test_size)}
    recognizer = Recognizer(trained_dir / "export")
    score = evaluate_dataset(recognizer.model, heldout, recognizer.recipe.model).score
    assert rows[-1][:3] == ["all", str(TINY_SPEC.test_size), str(round(score.accuracy * TINY_SPEC.test_size))]


def test_a_benchmark_of_another_seed_is_refused(trained_dir, converted_dir):
    heldout = converted_dir / "HeldOut" / "test"
    with pytest.raises(ValueError, match=rf"{re.escape(str(heldout))}: sample 1 is labelled .* another seed"):
        main([str(trained_dir / "export"), str(heldout), "--seed", str(TINY_SPEC.seed + 1)])
