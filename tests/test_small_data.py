"""Small data meets ImageNet defaults, through the real CLI: a batch larger than the data is
lowered with a one-line note (not refused), a resolution above the data's largest image side
is noted; nothing is noted where the settings fit."""
import json

from conftest import forked, pct

NOTE = "pct: note: "


def test_train_lowers_a_batch_larger_than_the_data(train_beton, val_beton, tmp_path, forks):
    out = tmp_path / "run"
    result = forked(forks, "train", "--data", train_beton, "--val", val_beton, "--out", out,
                    "--arch", "cnn_small", "-b", 256, "-j", 1, "--resolution", 16, "--epochs", 1,
                    "--print-freq", 0, "--no-tensorboard")
    assert result.returncode == 0, result.stderr
    notes = [line for line in result.stdout.splitlines() if line.startswith(NOTE)]
    assert notes == [f"{NOTE}--batch-size 256 is more than the 120 training samples; using "
                     f"--batch-size 120"]
    assert json.loads((out / "config.json").read_text())["batch_size"] == 120
    assert result.stderr == ""


def test_train_notes_a_resolution_above_the_images(train_beton, val_beton, tmp_path, forks):
    result = forked(forks, "train", "--data", train_beton, "--val", val_beton, "--out",
                    tmp_path / "run", "--arch", "cnn_small", "-b", 16, "-j", 1, "--resolution",
                    64, "--val-resolution", 24, "--epochs", 1, "--max-steps-per-epoch", 1,
                    "--print-freq", 0, "--no-tensorboard")
    assert result.returncode == 0, result.stderr
    notes = [line for line in result.stdout.splitlines() if line.startswith(NOTE)]
    assert notes == [f"{NOTE}--resolution 64 is above the largest image side of {train_beton} "
                     f"(32 px): every image is enlarged at least 2.0-fold"]  # 24 px fits


def test_precompute_notes_both_and_fitting_settings_note_nothing(capsys, train_beton,
                                                                 teacher_ckpt, tmp_path):
    base = ["precompute-teachers", "--data", train_beton, "--teacher", f"cnn_small={teacher_ckpt}",
            "--views", 1, "-j", 1]
    code, out, err = pct(capsys, *base, "--out", tmp_path / "a.zarr", "--batch-size", 500,
                         "--resolution", 48)
    assert code == 0, err
    notes = [line for line in out.splitlines() if line.startswith(NOTE)]
    assert notes == [f"{NOTE}--batch-size 500 is more than the 120 samples of {train_beton}; "
                     f"using --batch-size 120",
                     f"{NOTE}--resolution 48 is above the largest image side of {train_beton} "
                     f"(32 px): every image is enlarged at least 1.5-fold"]
    code, out, err = pct(capsys, *base, "--out", tmp_path / "b.zarr", "--batch-size", 32,
                         "--resolution", 32)
    assert code == 0 and NOTE not in out + err, out + err
