import json

import pytest

from crnn.config import PRESETS, ModelConfig, Recipe, recipe_for


def test_paper_preset_is_the_default_recipe():
    paper = PRESETS["paper"]
    assert paper == Recipe()
    assert paper.model.conv_filters == (64, 128, 256, 256, 512, 512, 512)
    assert paper.model.lstm_units == 256
    assert paper.model.num_classes == 37
    assert paper.train.momentum == 0.9


def test_overrides_replace_only_what_is_given():
    recipe = recipe_for("quick", steps=700, batch_size=None)
    assert recipe.train.steps == 700
    assert recipe.train.batch_size == PRESETS["quick"].train.batch_size


def test_unknown_preset_and_setting_are_named():
    with pytest.raises(ValueError, match="'huge'"):
        recipe_for("huge")
    with pytest.raises(ValueError, match="momentun"):
        recipe_for("tiny", momentun=0.5)


def test_invalid_values_are_refused():
    with pytest.raises(ValueError, match="steps"):
        recipe_for("tiny", steps=0)
    with pytest.raises(ValueError, match="32 x 100"):
        ModelConfig(width=128)
    with pytest.raises(ValueError, match="warmup_steps must be 0 to steps"):
        recipe_for("quick", steps=50)
    with pytest.raises(ValueError, match="channels must be 1"):
        ModelConfig(channels=4)
    with pytest.raises(ValueError, match="max_label_length must be 1 to 26"):
        ModelConfig(max_label_length=40)


def test_recipe_file_with_an_unknown_key_names_file_and_key(tmp_path):
    path = tmp_path / "recipe.json"
    path.write_text('{"model": {"lstm_unit": 3}}')
    with pytest.raises(ValueError, match=r"recipe.json: unknown model setting\(s\): lstm_unit"):
        Recipe.load(path)


def test_learning_rate_scales_linearly_with_global_batch():
    train = PRESETS["paper"].train
    assert train.scaled_learning_rate(512) == pytest.approx(train.learning_rate * 8)


def test_recipe_round_trips_through_json(tmp_path):
    recipe = recipe_for("tiny", steps=11)
    recipe.save(tmp_path / "recipe.json")
    assert Recipe.load(tmp_path / "recipe.json") == recipe
    assert recipe.flat_params()["model.conv_filters"] == "8,16,16,16,32,32,32"


def test_a_recipe_saved_before_standardisation_keeps_its_network_and_is_not_resumed_as_quick(tmp_path):
    """Its checkpoints were trained on unstandardised images: it loads without the layer, and the current
    ``quick`` recipe refuses to resume them, naming the setting."""
    from crnn.train.checkpoints import _check_recipe

    saved = PRESETS["quick"].to_dict()
    del saved["model"]["standardise"]
    (tmp_path / "recipe.json").write_text(json.dumps(saved))
    assert not Recipe.load(tmp_path / "recipe.json").model.standardise
    with pytest.raises(ValueError, match=r"different recipe \(model.standardise differ\)"):
        _check_recipe(PRESETS["quick"], tmp_path)


def test_a_time_budget_holds_whole_logging_windows_and_given_steps_lift_it():
    quick = PRESETS["quick"].train
    assert quick.steps_within_budget(1.0) == quick.steps  # a fast machine trains the preset's steps
    budget = quick.time_budget_s * 1000
    assert quick.steps_within_budget(budget / 1010) == 1000  # 1,010 fit: whole windows of 25
    assert quick.steps_within_budget(budget) == quick.warmup_steps + quick.log_every  # never less
    assert recipe_for("quick", steps=700).train.time_budget_s is None
    assert recipe_for("quick", steps=700, time_budget_s=60).train.time_budget_s == 60
    assert recipe_for("quick").train.time_budget_s == quick.time_budget_s
    with pytest.raises(ValueError, match="time_budget_s must be positive"):
        recipe_for("quick", time_budget_s=0)
