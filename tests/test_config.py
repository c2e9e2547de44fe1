"""Run configs: schema errors name the key and the closest valid one; overrides; the shipped
configs are valid; model arguments come from the task family."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

import modmeta as mm
from modmeta import config, registry
from modmeta.cli import main
from modmeta.config import ConfigError

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))
BASE = {
    "tasks": {"name": "sinusoid", "shots": 5, "queries": 5},
    "model": {"name": "mlp", "hidden": [8]},
    "learner": {"name": "maml", "inner_lr": 0.01},
    "train": {"iterations": 2, "meta_batch": 2},
}


def parse(**changes) -> config.Config:
    data = yaml.safe_load(yaml.safe_dump(BASE))  # a deep copy
    for path, value in changes.items():
        config.apply_overrides(data, [f"{path.replace('__', '.')}={yaml.safe_dump(value).strip()}"])
    return config.parse(data, source="run.yaml")


@pytest.mark.parametrize("section, key, wrong, message", [
    ("train", "iterations", "iteratons", "run.yaml: train.iteratons: unknown key; did you mean train.iterations?"),
    ("eval", "episodes", "episode", "eval.episode: unknown key; did you mean eval.episodes?"),
    ("learner", "inner_lr", "inner_lrr", "learner.inner_lrr: unknown argument of learner 'maml'; "
                                         "did you mean learner.inner_lr?"),
    ("model", "hidden", "hiden", "model.hiden: unknown argument of model 'mlp'; did you mean model.hidden?"),
])
def test_misspelt_key_is_refused_naming_the_key_and_the_suggestion(tmp_path, section, key, wrong, message):
    data = yaml.safe_load(yaml.safe_dump(BASE))
    part = data.setdefault(section, {})
    part[wrong] = part.pop(key, 3)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as e:
        config.load(path)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_misspelt_top_level_key_and_registry_name():
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["trian"] = data.pop("train")
    with pytest.raises(ConfigError, match=r"trian: unknown key; did you mean train\?.*train: required key missing"):
        config.parse(data)
    with pytest.raises(ConfigError, match=r"learner.name: unknown learner 'mamll'; did you mean maml\?"):
        parse(learner__name="mamll")


def test_wrong_type_names_the_key_and_the_value():
    with pytest.raises(ConfigError, match=r"train.iterations: Input should be a valid integer.*\(got 'many'\)"):
        parse(train__iterations="many")
    with pytest.raises(ConfigError, match=r"train.optimizer: unknown torch.optim class 'adamm'; did you mean 'Adam'\?"):
        parse(train__optimizer="adamm")  # any torch.optim name is valid (AdamW, adamw): see test_trainer_options


def test_split_and_missing_required_arguments_are_refused():
    with pytest.raises(ConfigError, match="tasks.split: modmeta picks the split"):
        parse(tasks__split="val")
    with pytest.raises(ConfigError, match="tasks.path: required by tasks 'npz', but missing"):
        parse(tasks={"name": "npz", "ways": 5, "shots": 1, "queries": 1})


def test_set_overrides_are_read_as_yaml(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(BASE))
    c = config.load(path, ["learner.inner_lr=1e-2", "model.hidden=[16, 16]", "train.optimizer=sgd",
                           "eval.steps=null", "train.lr=0.5"])
    assert c.learner.kwargs["inner_lr"] == 0.01
    assert c.model.kwargs["hidden"] == [16, 16]
    assert (c.train.optimizer, c.train.lr, c.eval.steps) == ("sgd", 0.5, None)
    with pytest.raises(ConfigError, match="write it as key.path=value"):
        config.load(path, ["learner.inner_lr"])
    with pytest.raises(ConfigError, match="train.iteratons: unknown key; did you mean train.iterations"):
        config.load(path, ["train.iteratons=5"])


def test_invalid_yaml_is_one_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train: {iterations: 3\nmodel: [")
    with pytest.raises(ConfigError, match=r"bad.yaml is not valid YAML at line \d+, column \d+") as e:
        config.load(path)
    assert "\n" not in str(e.value)


def test_model_output_and_input_sizes_come_from_the_tasks():
    run = config.build(parse())
    assert run.config.model.kwargs == {"hidden": [8], "out": 1, "in_features": 1}
    assert run.learner.model.head.out_features == 1


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_are_valid_and_sinusoid_ones_train(path, tmp_path):
    data = yaml.safe_load(path.read_text())
    if data["tasks"]["name"] not in registry.TASKS:
        pytest.skip(f"task family {data['tasks']['name']!r} is not registered")
    c = config.load(path)
    assert c.eval.episodes == 600
    if c.tasks.name != "sinusoid":
        return
    small = ["train.iterations=2", "train.meta_batch=2", "train.val_episodes=2", "train.val_every=1"]
    run = config.build(config.load(path, small))
    trainer = config.trainer(run, tmp_path, progress=False).fit(2)
    assert trainer.iteration == 2 and trainer.best is not None


def test_a_key_given_twice_is_refused_with_both_lines(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text("tasks: {name: sinusoid}\nmodel: {name: mlp}\nlearner: {name: maml}\n"
                    "train: {iterations: 3}\ntrain: {iterations: 4}\n")
    with pytest.raises(config.ConfigError) as e:
        config.load(path)
    assert str(e.value) == (f"{path} is not valid YAML at line 5, column 1: the key 'train' is given twice "
                            f"(first at line 4)")


@pytest.mark.parametrize("value", ["true", "1.5", "ten", "'10'"])
def test_training_integers_are_integers_not_booleans_fractions_or_text(value):
    with pytest.raises(config.ConfigError, match=r"train.iterations: Input should be a valid integer"):
        config.load("configs/sinusoid-maml.yaml", [f"train.iterations={value}"])
    assert config.load("configs/sinusoid-maml.yaml", ["train.lr=1"]).train.lr == 1.0  # an integer is a number


def test_a_binary_file_given_as_config_is_refused_with_its_name(tmp_path):
    path = tmp_path / "weights.pt"
    path.write_bytes(b"MODMETA\x80\xff\x00binary")
    with pytest.raises(config.ConfigError) as e:
        config.load(path)
    assert str(e.value).startswith(f"{path} is not a YAML config: it is not UTF-8 text (byte 7 is b'\\x80')")


@pytest.mark.parametrize("key, value, message", [
    ("learner.inner_steps", 1.5, "learner.inner_steps: expected an integer, got 1.5 (a number)"),
    ("learner.inner_steps", True, "learner.inner_steps: expected an integer, got true (a boolean)"),
    ("tasks.shots", "ten", "tasks.shots: expected an integer, got 'ten' (a string)"),
    ("learner.inner_lr", "0.1", "learner.inner_lr: expected a number, got '0.1' (a string)"),
    ("model.hidden", 40, "model.hidden: expected a list, each item an integer, got 40 (an integer)"),
    ("model.hidden", [40, "x"], "model.hidden: expected a list, each item an integer, got [40, x] (a list)"),
    ("learner.execution", "fast", "learner.execution: expected one of 'auto', 'vmap', 'loop', 'channels_last', 'threads', got 'fast'"),
    ("learner.first_order", 1, "learner.first_order: expected true or false, got 1 (an integer)"),
    ("learner.inner", {"name": "adam", "lr": "high"}, "learner.inner.lr: expected a number, got 'high'"),
])
def test_component_arguments_are_checked_against_the_constructors_type_hints(key, value, message):
    with pytest.raises(ConfigError) as e:
        parse(**{key.replace(".", "__"): value})
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_list_of_names_is_not_a_single_string_and_python_only_values_are_named():
    with pytest.raises(ConfigError, match=r"learner.head: expected a list, each item a string, got 'head'"):
        parse(learner={"name": "anil", "inner_lr": 0.1, "head": "head"})
    with pytest.raises(ConfigError, match=r"learner.relation: expected a Module \(built in Python, not in a config\)"):
        parse(learner={"name": "relationnet", "relation": 5})
    ok = parse(learner={"name": "anil", "inner_lr": 0.1, "head": ["head"]}, learner__inner_lr=1)  # an integer is a number
    assert ok.learner.kwargs["inner_lr"] == 1


@pytest.mark.parametrize("key, value, message", [
    ("learner.inner_lr", -0.1, "learner: the inner rate (inner_lr, or the inner optimizer's lr) must be a finite number > 0, got -0.1"),
    ("learner.inner_lr", float("nan"), "must be a finite number > 0, got nan"),
    ("learner.inner", {"name": "sgd", "lr": 0}, "learner.inner: the inner rate"),
    ("model.hidden", [0], "model.hidden: must hold numbers >= 1, got [0]"),
    ("tasks.name", "teacher", "tasks: the inputs' range needs low < high"),
])
def test_out_of_range_arguments_are_refused_when_built_naming_the_key(key, value, message):
    cfg = parse(**{key.replace(".", "__"): value}, **({"tasks__low": 3.0} if key == "tasks.name" else {}))
    with pytest.raises(ConfigError) as e:
        config.build(cfg)
    assert message in str(e.value)


def test_range_checks_hold_in_python_too():
    with pytest.raises(ValueError, match="hidden must hold numbers >= 1"):
        mm.models.MLP(1, 1, hidden=(40, 0))
    with pytest.raises(ValueError, match="the inner rate"):
        mm.learners.MAML(mm.models.MLP(1, 1), inner_lr=-0.1)
    with pytest.raises(ValueError, match="features must be a number >= 1"):
        mm.learners.MatchingNet(mm.models.Conv4(out=None), features=0)


def test_conv4_refuses_images_too_small_for_its_pools():
    with pytest.raises(ValueError, match="image_size must be >= 16 for four 2x2 max-pools, got 12"):
        mm.models.Conv4(5, image_size=12)
    assert mm.models.Conv4(5, image_size=12, downsample="stride")(torch.zeros(2, 1, 12, 12)).shape == (2, 5)


def test_conv4_features_reach_the_head_averaged_or_flattened():
    # MAML's stride-2 network averages its last 2x2 maps (64 features); Reptile's flattens them (256)
    assert mm.models.Conv4(5, downsample="stride").head.in_features == 64
    flat = mm.models.Conv4(5, downsample="stride", features="flatten")
    assert flat.head.in_features == 256 and flat(torch.zeros(3, 1, 28, 28)).shape == (3, 5)
    assert mm.models.Conv4(5, features="mean").head.in_features == 64  # max-pool maps are 1x1 at 28px
    assert mm.models.Conv4(5, image_size=32, features="mean").head.in_features == 64
    assert mm.models.Conv4(5, image_size=32).head.in_features == 256
    with pytest.raises(ValueError, match="features must be 'flatten' or 'mean'"):
        mm.models.Conv4(5, features="max")


@pytest.mark.parametrize("make", [lambda: mm.models.Conv4(5), lambda: mm.models.RelationEmbedding()])
def test_max_pool_before_relu_is_the_standard_block_to_the_bit_in_second_order(make):
    # Conv4 and the Relation embedding pool before their ReLU (cheaper); the standard order
    # [conv, BatchNorm, ReLU, max-pool] must give the same loss, gradient and second order
    torch.manual_seed(0)
    model = make()
    standard = make()
    standard.load_state_dict(model.state_dict())
    blocks = list(standard.features)
    pools = [i for i, layer in enumerate(blocks) if isinstance(layer, torch.nn.MaxPool2d)]
    assert pools and all(isinstance(blocks[i + 1], torch.nn.ReLU) for i in pools)
    for i in pools:
        blocks[i], blocks[i + 1] = blocks[i + 1], blocks[i]
    standard.features = torch.nn.Sequential(*blocks)
    x, y = torch.randn(20, 1, 28, 28), torch.arange(20) % 5

    def derivatives(m: torch.nn.Module) -> list[torch.Tensor]:
        out = m(x).flatten(1)
        loss = torch.nn.functional.cross_entropy(out[:, :5], y) if out.shape[1] >= 5 else out.sum()
        grads = torch.autograd.grad(loss, list(m.parameters()), create_graph=True)
        second = torch.autograd.grad(sum((g ** 2).sum() for g in grads), list(m.parameters()))
        return [loss, *grads, *second]

    assert all(torch.equal(a, b) for a, b in zip(derivatives(model), derivatives(standard), strict=True))


def test_a_config_refused_at_build_leaves_no_run_folder(tmp_path):
    out = tmp_path / "run"
    code = main(["train", str(CONFIGS[0].parent / "sinusoid-maml.yaml"), "--out", str(out), "--set", "model.hidden=[0]", "--set", "train.iterations=2"])
    assert code == 1 and not out.exists()


@pytest.mark.parametrize("path", sorted((CONFIGS[0].parent / "paper").glob("*.yaml")), ids=lambda p: p.name)
def test_paper_configs_are_valid_and_name_their_one_command(path):
    c = config.load(path)
    assert c.train.iterations >= 20_000  # a paper's full budget (iMAML's authors: 20,000), not a CPU benchmark's
    assert f"modmeta train configs/paper/{path.name} --out " in path.read_text()
