import dataclasses

import pytest

from siamdog.config import TrainConfig, load_config, save_config
from siamdog.errors import SiamdogError
from tests.conftest import REPO


def test_original_yaml_is_the_recipe_in_the_dataclass_defaults():
    config = load_config(REPO / "configs" / "original.yaml")
    assert config == TrainConfig()
    heads, finetune, polish = config.stages
    assert (heads.name, heads.optimizer, heads.trainable_blocks, heads.binary_loss_weight, heads.augment) == ("heads", "nadam", 0, 0.5, True)
    assert (finetune.optimizer, finetune.learning_rate, finetune.momentum, finetune.trainable_blocks, finetune.binary_loss_weight) == ("sgd", 1e-4, 0.9, 2, 0.5)
    assert (polish.optimizer, polish.learning_rate, polish.augment) == ("sgd", 1e-5, False)


def test_default_yaml_is_the_benchmarked_recipe_with_label_smoothing_on_the_imagenet_download_in_the_machine_s_precision():
    benchmarked = load_config(REPO / "bench" / "configs" / "whole-tower.yaml")
    default = load_config(REPO / "configs" / "default.yaml")
    assert (default.weights, default.precision, default.label_smoothing) == ("imagenet", "auto", 0.1)
    assert default == dataclasses.replace(benchmarked, weights="imagenet", precision="auto", label_smoothing=0.1)


def test_demo_config_loads():
    assert load_config(REPO / "configs" / "demo.yaml").weights == "none"


def test_save_and_load_round_trip(tmp_path):
    config = load_config(None, {"image_size": 128, "augment": {"brightness_range": [0.8, 1.2]}})
    save_config(config, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == config
    assert config.augment.brightness_range == (0.8, 1.2)


def test_overrides_win_over_the_file(tmp_path):
    (tmp_path / "c.yaml").write_text("image_size: 128\nbatch_size: 8\n")
    config = load_config(tmp_path / "c.yaml", {"batch_size": 4})
    assert (config.image_size, config.batch_size) == (128, 4)


@pytest.mark.parametrize(
    "text, message",
    [
        ("imagesize: 128\n", "imagesize: Unexpected keyword argument"),
        ("image_size: big\n", "image_size: Input should be a valid integer"),
        ("backbone: resnet9000\n", "unknown backbone 'resnet9000'"),
        ("stages:\n- {name: heads, epochs: 1, optimizer: sgd, learning_rate: -0.1}\n", "stages.0.learning_rate: Input should be greater than 0"),
        ("stages:\n- {name: a, epochs: 1, optimizer: sgd, learning_rate: 0.1}\n- {name: a, epochs: 1, optimizer: sgd, learning_rate: 0.1}\n", "repeated: a"),
        ("stages:\n- {name: a, epochs: 1, optimizer: rmsprop, learning_rate: 0.1}\n", "stages.0.optimizer"),
        ("augment: {rotation: 3}\n", "augment.rotation"),
        ("stages:\n- {name: a, epochs: 2, optimizer: sgd, learning_rate: 0.1, warmup_epochs: 1}\n", "stages.0: warmup_epochs: only the cosine schedule warms up"),
        ("stages:\n- {name: a, epochs: 2, optimizer: sgd, learning_rate: 0.1, schedule: cosine, warmup_epochs: 2}\n", "stages.0: warmup_epochs 2 leaves none of the stage's 2 epoch"),
        ("stages:\n- {name: a, epochs: 2, optimizer: sgd, learning_rate: 0.1, schedule: step}\n", "stages.0.schedule"),
        ("feature_cache_views: [as is, sideways]\n", "feature_cache_views: unknown view 'sideways'"),
        ("feature_cache_views: [mirrored, as is]\n", "feature_cache_views: the first view must be 'as is'"),
        ("- just a list\n", "expected a mapping"),
        ("key: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_configs_are_refused_with_the_key_named(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(SiamdogError, match=message.replace("[", r"\[").replace(".", r"\.")) as error:
        load_config(path)
    assert str(path) in str(error.value)



@pytest.mark.parametrize(
    "changes, message",
    [
        ({"mode": "softmax", "embedding_size": 8, "auxiliary_head": True}, "auxiliary_head: the auxiliary head is a multi-loss output"),
        ({"auxiliary_head": True}, "auxiliary_head: needs embedding_size > 0"),
    ],
)
def test_an_auxiliary_head_without_what_it_needs_is_one_clear_error(changes, message):
    with pytest.raises(SiamdogError, match=message):
        load_config(None, changes)


def test_a_block_lr_factor_on_a_stage_that_trains_no_blocks_is_one_clear_error():
    stage = {"name": "heads", "epochs": 1, "optimizer": "nadam", "learning_rate": 1e-3, "block_lr_factor": 0.3}
    with pytest.raises(SiamdogError, match=r"stages.0: block_lr_factor 0.3: this stage trains no blocks"):
        load_config(None, {"stages": [stage]})


def test_command_line_settings_win_over_the_config_file():
    from siamdog.cli import _train_config, build_parser

    command = ["train", "--data", "data", "--run", "run", "--config", str(REPO / "configs" / "default.yaml")]
    config = _train_config(build_parser().parse_args([*command, "--precision", "mixed_bfloat16", "--weights", "none", "--label-smoothing", "0.1"]))
    assert (config.precision, config.weights, config.label_smoothing, config.stages[-1].trainable_blocks) == ("mixed_bfloat16", "none", 0.1, 14)
    with pytest.raises(SystemExit):
        build_parser().parse_args([*command, "--precision", "float8"])
    with pytest.raises(SiamdogError, match="label_smoothing: Input should be less than 1"):
        _train_config(build_parser().parse_args([*command, "--label-smoothing", "1"]))
