"""--config FILE through the real CLI: every recipe under recipes/ is valid for the command
its first line names; flags given on the command line override the file in a real run; an
unknown key, a bad value or a wrong type is one line naming the file and the key."""
import json
import re
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, forked, pct
from pct_pipeline.cli import COMMANDS

RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))
USAGE = re.compile(r"^# (?:torchrun .*-m pct_pipeline|pct) ([a-z-]+) --config (\S+)$")


def printed(capsys, *args):
    """The mapping `pct ARGS --print-config` prints."""
    code, out, err = pct(capsys, *args, "--print-config")
    assert code == 0, err
    assert out.startswith(f"# pct {args[0]}: ")
    return yaml.safe_load(out)


def test_the_readme_recipes_ship_as_files():
    names = {p.stem for p in RECIPES}
    assert {"imagenet_fd_resnet18", "imagenet_cna_resnet18", "imagenet_ldi_r18_to_r50",
            "imagenet_elodi_r18x8_to_r50", "imagenet_old_predictions"} <= names


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_each_recipe_is_valid_for_the_command_it_names(recipe, capsys):
    usage = USAGE.match(recipe.read_text().splitlines()[0])
    assert usage, f"{recipe.name}: the first line says how to run it"
    command, path = usage.groups()
    assert command in COMMANDS and (ROOT / path) == recipe
    values = yaml.safe_load(recipe.read_text())
    resolved = printed(capsys, command, "--config", recipe)
    for key, value in values.items():
        assert resolved[key] == value, key  # every key an option, every value accepted


def test_the_command_line_overrides_the_file_in_a_real_run(train_beton, val_beton, tmp_path,
                                                            forks):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(f"data: {train_beton}\nval: {val_beton}\narch: cnn_small\n"
                      "batch_size: 16\nresolution: 16\nepochs: 3\nseed: 5\nprint-freq: 0\n"
                      "workers: 1\nmax-steps-per-epoch: 2\nkd-alpha: null\ntensorboard: false\n")
    out = tmp_path / "run"
    result = forked(forks, "train", "--config", recipe, "--out", out, "--epochs", 1, "--seed", 7)
    assert result.returncode == 0, result.stderr
    config = json.loads((out / "config.json").read_text())
    assert (config["epochs"], config["seed"]) == (1, 7)  # the command line's
    assert (config["batch_size"], config["arch"], config["views"]["resolution"]) == \
        (16, "cnn_small", 16)  # the file's
    assert config["loss"]["kd_alpha"] == 0.9  # null: the option's default
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
    assert not list(out.glob("events.out.tfevents.*"))


def test_repeatable_and_two_number_options_take_lists(capsys, tmp_path):
    recipe = tmp_path / "p.yaml"
    recipe.write_text("data: d.beton\nout: c.zarr\nviews: 2\nscale: [0.5, 1]\nflip: 0\n"
                      "teacher: [cnn_small=a.pt, cnn_wide=b.pt]\ncodec: sample:32@4.0\n")
    resolved = printed(capsys, "precompute-teachers", "--config", recipe, "--teacher", "x=c.pt")
    assert resolved["scale"] == [0.5, 1.0] and resolved["flip"] == 0
    assert resolved["teacher"] == ["x=c.pt"]  # the command line's list replaces the file's
    assert resolved["codec"] == "sample:32@4"
    analyze = tmp_path / "a.yaml"
    analyze.write_text("gate: ['nfr<=2%', 'top1>=old']\nbootstrap: 200\n")
    resolved = printed(capsys, "analyze", "old.zarr", "new.zarr", "--config", analyze)
    assert resolved["gate"] == ["nfr<=2%", "top1>=old"] and resolved["bootstrap"] == 200


@pytest.mark.parametrize("text, message", [
    ("kd-alpah: 0.5", "unknown key 'kd-alpah', not an option of pct train (did you mean "
                      "'kd-alpha'?)"),
    ("kd-alpha: 2", "key kd-alpha: 2.0 is not in the range 0<=x<=1"),
    ("kd-filter: all-pass", "key kd-filter: 'all-pass' is not one of 'all_pass'"),
    ("epochs: 2.5", "key epochs: expected an integer, got 2.5"),
    ("lr: fast", "key lr: expected a number, got 'fast'"),
    ("pretrained: 'yes'", "key pretrained: expected true or false, got 'yes'"),
    ("scale: 0.5", "key scale: expected a list of 2 values, got 0.5"),
    ("online-teacher: cnn_small=a.pt", "key online-teacher: expected a list, got 'cnn_small=a.pt'"),
    ("arch: 18", "key arch: expected a string, got 18"),
    ("lr: 0.1\nlearning-rate: 0.2", "keys 'lr' and 'learning-rate' both set --lr"),
    ("- epochs: 1", "must hold a mapping of option names to values, not a list"),
    ("epochs: [1", "is not valid YAML at line 2"),
])
def test_a_bad_file_is_one_line_naming_file_and_key(text, message, capsys, tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(text + "\n")
    code, _, err = pct(capsys, "train", "--config", recipe, "--data", "a", "--val", "b",
                       "--out", "c")
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"pct: error: --config {recipe}") and message in err, err


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_reads_a_config_file(command, capsys, tmp_path):
    recipe = tmp_path / "x.yaml"
    recipe.write_text("no-such-option: 1\n")
    code, _, err = pct(capsys, command, "--config", recipe)
    assert code == 2 and f"unknown key 'no-such-option', not an option of pct {command}" in err


def test_a_missing_file_is_named(capsys, tmp_path):
    code, _, err = pct(capsys, "models", "--config", tmp_path / "none.yaml")
    assert code == 2 and err == f"pct: error: cannot read --config {tmp_path / 'none.yaml'}: " \
                                "No such file or directory\n"
