"""Option spellings through the real `pct` group (click's CliRunner) and the ARCH=PATH parser."""
import re
import subprocess
import sys

import pytest
from click.testing import CliRunner

from pct_pipeline.cli import COMMANDS, cli
from pct_pipeline.errors import PctError
from pct_pipeline.options import parse_arch_path


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_lists_each_option_once_with_dashes(command):
    result = CliRunner().invoke(cli, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert not re.findall(r"--[a-z0-9]+_[a-z0-9_]*", result.output), result.output
    declared = [line.split()[0].rstrip(",") for line in result.output.splitlines()
                if re.match(r"\s{2}-", line)]
    assert len(declared) == len(set(declared)), declared


def help_and_imports(*args):
    """(the help text of `pct ARGS --help`, the heavy libraries it imported), in a new process."""
    script = (f"import sys\nfrom pct_pipeline.cli import main\ntry:\n    main({[*args, '--help']})\n"
              "except SystemExit:\n    pass\n"
              "print(sorted(m for m in ('torch', 'ffcv', 'numba', 'zarr') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    *help_lines, imported = result.stdout.splitlines()
    return " ".join(" ".join(help_lines).split()), imported


def test_top_level_help_lists_every_command_without_importing_one():
    listed, imported = help_and_imports()
    assert imported == "[]"
    for name, (_, summary) in COMMANDS.items():
        assert f"{name} {summary}" in listed, listed


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_commands_help_does_not_load_ffcv(command):
    text, imported = help_and_imports(command)
    assert f"Usage: pct {command}" in text
    assert "ffcv" not in imported, imported


def test_underscore_spellings_name_the_same_options_and_leave_values_alone(tmp_path):
    data = tmp_path / "my_train_data.beton"
    result = CliRunner().invoke(cli, [
        "train", "--data", str(data), "--val", str(data), "--out", str(tmp_path / "my_run"),
        "--kd_alpha", "0.5", "--kd_filter", "neg_flip", "--no_li_exclude_gt",
        "--batch_size=8"])
    # parsed: the run stops at the first file it opens, its name as given
    assert isinstance(result.exception, PctError), result.output
    assert str(result.exception) == f"dataset file not found: {data}"


def test_choice_values_keep_their_spelling():
    result = CliRunner().invoke(cli, ["train", "--kd-filter", "all-pass", "--data", "x",
                                      "--val", "x", "--out", "x"])
    assert result.exit_code == 2
    message = " ".join(result.output.split())
    assert "'all-pass' is not one of 'all_pass', 'old_correct', 'neg_flip', 'new_incorrect'" \
        in message, message


def test_unknown_option_is_named_with_dashes():
    result = CliRunner().invoke(cli, ["write-dataset", "a", "b", "--max_resolutoin", "3"])
    assert result.exit_code == 2 and "No such option '--max-resolutoin'" in result.output


@pytest.mark.parametrize("value, arch, path", [
    ("resnet18=/runs/c.pt", "resnet18", "/runs/c.pt"),
    ("resnet18=/runs/lr=0.1/c.pt", "resnet18", "/runs/lr=0.1/c.pt"),
    ("  vit_b_16 = ckpt dir/c.pt ", "vit_b_16", "ckpt dir/c.pt"),
])
def test_arch_path_splits_at_the_first_equals_sign(value, arch, path):
    assert parse_arch_path(value, "--teacher") == (arch, path)
    assert parse_arch_path(value, "--bct-old-model", require_arch=False) == (arch, path)


@pytest.mark.parametrize("value, path", [("/runs/c.pt", "/runs/c.pt"),
                                         ("/runs/lr=0.1/c.pt", "/runs/lr=0.1/c.pt"),
                                         (" c.pt ", "c.pt")])
def test_arch_is_optional_where_allowed(value, path):
    assert parse_arch_path(value, "--bct-old-model", require_arch=False) == (None, path)


@pytest.mark.parametrize("value, require_arch, message", [
    ("cnn_small", True, "--teacher expects ARCH=CHECKPOINT, got 'cnn_small'"),
    ("/runs/lr=0.1/c.pt", True, "--teacher expects ARCH=CHECKPOINT, got '/runs/lr=0.1/c.pt'"),
    ("resnet18=", True, "--teacher expects ARCH=CHECKPOINT, got 'resnet18=' (no checkpoint"),
    ("=c.pt", True, "--teacher expects ARCH=CHECKPOINT, got '=c.pt'"),
    ("resnet18= ", False, "--teacher expects [ARCH=]CHECKPOINT, got 'resnet18= '"),
    ("=c.pt", False, "--teacher expects [ARCH=]CHECKPOINT, got '=c.pt'"),
    ("  ", False, "--teacher expects [ARCH=]CHECKPOINT, got '  '"),
])
def test_malformed_arch_path_is_one_line_naming_option_and_value(value, require_arch, message):
    with pytest.raises(PctError) as error:
        parse_arch_path(value, "--teacher", require_arch)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)
