import numpy as np
import pytest

from crnn.charset import Charset
from crnn.evaluate.metrics import edit_distance, normalised_similarity, score
from crnn.model.ctc import greedy_decode


@pytest.mark.parametrize(("a", "b", "distance"), [
    ("", "", 0), ("abc", "", 3), ("kitten", "sitting", 3), ("flaw", "lawn", 2), ("same", "same", 0),
])
def test_edit_distance(a, b, distance):
    assert edit_distance(a, b) == distance
    assert edit_distance(b, a) == distance


def test_normalised_similarity_is_one_minus_distance_over_longest():
    assert normalised_similarity("kitten", "sitting") == pytest.approx(1 - 3 / 7)
    assert normalised_similarity("", "") == 1.0


def test_score_normalises_both_sides_before_comparing():
    result = score(["Hello!", "WORLD", "abc"], ["hello", "world", "abd"], Charset())
    assert result.num_samples == 3
    assert result.correct == 2
    assert result.accuracy == pytest.approx(2 / 3)
    assert result.ned == pytest.approx((1 + 1 + 2 / 3) / 3)


def test_score_needs_one_prediction_per_ground_truth():
    with pytest.raises(ValueError, match="2 ground truths but 1"):
        score(["a", "b"], ["a"], Charset())


def test_greedy_decode_merges_repeats_and_drops_blanks():
    charset = Charset("ab")  # a=0, b=1, blank=2
    path = [0, 0, 2, 0, 1, 1, 2, 2]  # "aa-abb--" -> "aab"
    logits = np.eye(3)[path][None] * 10
    assert greedy_decode(logits, charset) == ["aab"]
