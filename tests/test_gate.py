"""The model gate: minimum average, no regression beyond the allowance, new and missing benchmarks."""

import math

import pytest

from crnn.evaluate.report import summarise
from crnn.registry.gate import Check, Decision, GateRule, champion_accuracies, champion_data_digests, decide


def report(**accuracies: float) -> dict:
    """A report shaped like the evaluate step's (``summarise``), from benchmark accuracies."""
    return summarise({name: {"accuracy": acc, "ned": 0.9, "correct": round(1000 * acc), "num_samples": 1000}
                      for name, acc in accuracies.items()})


def check(decision: Decision, name: str) -> Check:
    (found,) = [c for c in decision.checks if c.name == name]
    return found


# --- the minimum ---------------------------------------------------------------------------------------------

def test_average_at_or_above_the_minimum_passes():
    decision = decide(report(IIIT5K=0.80, SVT=0.70), GateRule(min_average=0.75), champion=None)
    assert decision.promote
    expected = Check("average", True, 0.75, 0.75, "average: 75.00 % meets the minimum 75.00 %")
    assert check(decision, "average") == expected
    assert decision.reasons() == []


def test_average_below_the_minimum_fails():
    decision = decide(report(IIIT5K=0.80, SVT=0.70), GateRule(min_average=0.76), champion=None)
    assert not decision.promote
    assert decision.reasons() == ["average: 75.00 % is below the minimum 76.00 %"]


def test_average_equal_to_the_minimum_up_to_float_rounding_passes():
    average = report(A=0.50, B=0.50, C=0.59)["average"]
    assert average < 0.53  # 0.5299999999999999: the mean is not exactly 0.53 in binary floating point
    assert decide(report(A=0.50, B=0.50, C=0.59), GateRule(min_average=0.53), champion=None).promote


def test_no_champion_applies_only_the_minimum():
    decision = decide(report(IIIT5K=0.10, SVT=0.95), GateRule(min_average=0.5, max_drop_points=0.0), champion=None)
    assert decision.promote
    assert [c.name for c in decision.checks] == ["average"]
    assert decision.champion_version is None


def test_a_nan_average_fails():
    bad = report(IIIT5K=0.8)
    bad["average"] = math.nan
    assert not decide(bad, GateRule(), champion=None).promote


# --- regression against the champion -------------------------------------------------------------------------

def test_a_drop_beyond_the_allowance_fails_naming_the_benchmark():
    decision = decide(report(IIIT5K=0.80, SVT=0.781), GateRule(max_drop_points=1.0),
                      champion={"IIIT5K": 0.79, "SVT": 0.804}, champion_version="3")
    assert not decision.promote
    assert decision.reasons() == ["SVT: 78.10 % is 2.30 points below the champion's 80.40 % (allowed: 1.00)"]
    svt = check(decision, "SVT")
    assert (svt.passed, svt.candidate, svt.reference) == (False, 0.781, 0.804)
    assert check(decision, "IIIT5K").passed


@pytest.mark.parametrize(("champion", "candidate"), [(0.80, 0.79), (0.5006, 0.4906), (0.0114, 0.0014)])
def test_a_drop_of_exactly_the_allowance_passes(champion, candidate):
    # 100 * 0.5006 - 100 * 0.4906 == 1.000000000000007: without the tolerance this would fail.
    decision = decide(report(SVT=candidate), GateRule(max_drop_points=1.0), champion={"SVT": champion})
    assert decision.promote, decision.reasons()


def test_a_drop_just_beyond_the_allowance_fails():
    decision = decide(report(SVT=0.7899), GateRule(max_drop_points=1.0), champion={"SVT": 0.80})
    assert not decision.promote
    assert decision.reasons() == ["SVT: 78.99 % is 1.01 points below the champion's 80.00 % (allowed: 1.00)"]


def test_zero_allowance_accepts_equal_and_better():
    rule = GateRule(max_drop_points=0.0)
    assert decide(report(SVT=0.80, IC13=0.95), rule, champion={"SVT": 0.80, "IC13": 0.90}).promote
    assert not decide(report(SVT=0.7999), rule, champion={"SVT": 0.80}).promote


def test_a_passing_benchmark_explains_the_change():
    decision = decide(report(SVT=0.805), GateRule(), champion={"SVT": 0.80})
    assert check(decision, "SVT").reason == "SVT: 80.50 % vs the champion's 80.00 % (+0.50 points, allowed drop: 1.00)"


def test_both_rules_apply_with_a_champion():
    decision = decide(report(SVT=0.60), GateRule(min_average=0.7, max_drop_points=1.0), champion={"SVT": 0.80})
    assert [c.name for c in decision.checks if not c.passed] == ["average", "SVT"]


def test_a_nan_benchmark_fails():
    nan = {"benchmarks": {"SVT": {"accuracy": math.nan}}, "average": 0.9}
    decision = decide(nan, GateRule(), champion={"SVT": 0.80})
    assert not decision.promote
    assert decision.reasons() == ["SVT: accuracy nan is not a number"]


def test_a_new_benchmark_passes_with_no_comparison():
    decision = decide(report(IIIT5K=0.80, CUTE80=0.10), GateRule(), champion={"IIIT5K": 0.80})
    assert decision.promote
    cute = check(decision, "CUTE80")
    assert (cute.passed, cute.candidate, cute.reference) == (True, 0.10, None)
    assert "new, no comparison" in cute.reason


def test_a_champion_without_accuracies_makes_every_benchmark_new():
    decision = decide(report(IIIT5K=0.80), GateRule(), champion={})
    assert decision.promote
    assert "new, no comparison" in check(decision, "IIIT5K").reason


def test_a_benchmark_the_candidate_was_not_evaluated_on_fails():
    decision = decide(report(IIIT5K=0.90), GateRule(), champion={"IIIT5K": 0.80, "SVT": 0.804})
    assert not decision.promote
    svt = check(decision, "SVT")
    assert (svt.passed, svt.candidate, svt.reference) == (False, None, 0.804)
    assert decision.reasons() == ["SVT: not evaluated (the champion scored 80.40 %)"]


def test_the_champions_average_is_not_a_benchmark():
    decision = decide(report(SVT=0.80), GateRule(), champion={"SVT": 0.80, "average": 0.95})
    assert decision.promote
    assert [c.name for c in decision.checks] == ["average", "SVT"]


# --- tags, metrics, table ------------------------------------------------------------------------------------

@pytest.fixture
def rejected() -> Decision:
    return decide(report(IIIT5K=0.82, SVT=0.781, CUTE80=0.5), GateRule(min_average=0.5, max_drop_points=1.0),
                  champion={"IIIT5K": 0.80, "SVT": 0.804, "IC15": 0.6}, champion_version="7")


def test_tags(rejected):
    assert rejected.as_tags() == {
        "gate.decision": "rejected",
        "gate.champion_version": "7",
        "gate.average": "pass",
        "gate.IIIT5K": "pass",
        "gate.SVT": "fail: SVT: 78.10 % is 2.30 points below the champion's 80.40 % (allowed: 1.00)",
        "gate.CUTE80": "pass",
        "gate.IC15": "fail: IC15: not evaluated (the champion scored 60.00 %)",
    }


def test_tags_of_a_promotion_without_champion():
    assert decide(report(SVT=0.8), GateRule(), champion=None).as_tags() == {
        "gate.decision": "promoted", "gate.average": "pass"}


def test_tag_keys_keep_to_mlflows_characters():
    tags = decide(report(**{"IC13 857": 0.9}), GateRule(), champion={"IC13 857": 0.9}).as_tags()
    assert "gate.IC13 857" in tags
    odd = decide({"benchmarks": {"SVT+P (645)": {"accuracy": 0.8}}, "average": 0.8}, GateRule(), champion={})
    assert "gate.SVT_P _645_" in odd.as_tags()


def test_metrics(rejected):
    metrics = rejected.as_metrics()
    assert set(metrics) == {"gate.promoted", "gate.delta/IIIT5K", "gate.delta/SVT"}
    assert metrics["gate.promoted"] == 0.0
    assert metrics["gate.delta/IIIT5K"] == pytest.approx(2.0)
    assert metrics["gate.delta/SVT"] == pytest.approx(-2.3)
    assert decide(report(SVT=0.8), GateRule(), champion=None).as_metrics() == {"gate.promoted": 1.0}


def test_table(rejected):
    lines = rejected.format_table().splitlines()
    assert lines[0].split() == ["check", "candidate", "%", "reference", "%", "result", "reason"]
    assert len(lines) == 1 + len(rejected.checks) + 1
    rows = {line.split()[0]: line for line in lines[1:-1]}
    assert rows["SVT"].split()[:4] == ["SVT", "78.10", "80.40", "FAIL"]
    assert rows["SVT"].endswith("(allowed: 1.00)")
    assert rows["average"].split()[:4] == ["average", f"{100 * (0.82 + 0.781 + 0.5) / 3:.2f}", "50.00", "pass"]
    assert rows["CUTE80"].split()[:4] == ["CUTE80", "50.00", "-", "pass"]
    assert rows["IC15"].split()[:4] == ["IC15", "-", "60.00", "FAIL"]
    assert lines[-1] == "decision: rejected (champion version 7)"


# --- champion accuracies from model version tags ------------------------------------------------------------

def test_champion_accuracies_reads_the_accuracy_tags():
    tags = {"accuracy/IIIT5K": "0.7800", "accuracy/SVT": "0.8040", "accuracy/average": "0.7920",
            "origin": "test", "gate.decision": "promoted", "accuracy/": "0.5"}
    assert champion_accuracies(tags) == {"IIIT5K": 0.78, "SVT": 0.804}


def test_champion_accuracies_with_another_prefix():
    assert champion_accuracies({"acc.SVT": "0.5", "accuracy/SVT": "0.9"}, prefix="acc.") == {"SVT": 0.5}


@pytest.mark.parametrize("value", ["", "high", "0,78", "nan", "78.0", "-0.1"])
def test_champion_accuracies_refuses_a_malformed_value_naming_the_tag(value):
    with pytest.raises(ValueError, match="accuracy/SVT"):
        champion_accuracies({"accuracy/IIIT5K": "0.78", "accuracy/SVT": value})


def test_champion_accuracies_feed_the_gate():
    champion = champion_accuracies({"accuracy/SVT": "0.8040", "accuracy/average": "0.8040"})
    assert decide(report(SVT=0.7940), GateRule(), champion=champion).promote


# --- the rule ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("kwargs", "setting"), [
    ({"min_average": -0.01}, "min_average"),
    ({"min_average": 1.5}, "min_average"),
    ({"min_average": math.nan}, "min_average"),
    ({"max_drop_points": -1.0}, "max_drop_points"),
    ({"max_drop_points": math.nan}, "max_drop_points"),
])
def test_rule_validation(kwargs, setting):
    with pytest.raises(ValueError, match=setting):
        GateRule(**kwargs)


def test_rule_defaults_and_bounds():
    assert GateRule() == GateRule(min_average=0.0, max_drop_points=1.0)
    GateRule(min_average=1.0, max_drop_points=0.0)
    GateRule(max_drop_points=math.inf)


# --- benchmark data --------------------------------------------------------------------------------------------

def on_data(decision_report: dict, **digests: str) -> dict:
    """``decision_report`` with each named benchmark's manifest digest, as the evaluate step records it."""
    for name, digest in digests.items():
        decision_report["benchmarks"][name]["data_sha256"] = digest
    return decision_report


def test_a_benchmark_on_other_data_than_the_champions_fails_whatever_the_figures():
    candidate = on_data(report(IIIT5K=0.99, SVT=0.80), IIIT5K="a" * 64, SVT="b" * 64)
    decision = decide(candidate, GateRule(), champion={"IIIT5K": 0.78, "SVT": 0.80},
                      champion_data={"IIIT5K": "c" * 64, "SVT": "b" * 64})
    assert not decision.promote
    iiit5k = check(decision, "IIIT5K")
    assert (iiit5k.passed, iiit5k.candidate, iiit5k.reference) == (False, 0.99, None)
    assert decision.reasons() == ["IIIT5K: 99.00 % on other data than the champion's 78.00 % "
                                  "(data aaaaaaaaaaaa, the champion's cccccccccccc); no comparison"]
    assert check(decision, "SVT").passed  # the same data: compared as usual
    assert "gate.delta/IIIT5K" not in decision.as_metrics()


@pytest.mark.parametrize(("candidate_digest", "champion_data"), [
    ("a" * 64, {"IIIT5K": "a" * 64}),  # the same data
    (None, {"IIIT5K": "a" * 64}),  # the candidate's report has no digest
    ("a" * 64, {}),  # a champion registered before digests were recorded
    ("a" * 64, None),
])
def test_benchmarks_are_compared_when_the_data_agree_or_one_side_has_no_digest(candidate_digest, champion_data):
    candidate = report(IIIT5K=0.70)
    if candidate_digest:
        on_data(candidate, IIIT5K=candidate_digest)
    decision = decide(candidate, GateRule(max_drop_points=1.0), champion={"IIIT5K": 0.80},
                      champion_data=champion_data)
    assert decision.reasons() == ["IIIT5K: 70.00 % is 10.00 points below the champion's 80.00 % (allowed: 1.00)"]


def test_a_new_benchmark_on_data_the_champion_never_saw_is_still_new():
    candidate = on_data(report(CUTE80=0.5), CUTE80="a" * 64)
    decision = decide(candidate, GateRule(), champion={}, champion_data={"CUTE80": "b" * 64})
    assert decision.promote and "new, no comparison" in check(decision, "CUTE80").reason


def test_champion_data_digests_reads_the_data_tags():
    tags = {"data.sha256/IIIT5K": "a" * 64, "data.sha256/": "x", "accuracy/IIIT5K": "0.78",
            "data.sha256/synth/train": "b" * 64}
    assert champion_data_digests(tags) == {"IIIT5K": "a" * 64, "synth/train": "b" * 64}
