"""The command line explains itself: help with every default, --version, renamed options,
CSV column names kept, the batch size chosen from the data, Ctrl-C and NaN-guard hints."""

import argparse
import os

import numpy as np
import pytest

import jaxflows
from jaxflows import cli
from jaxflows.data import column_names, load_array


def _subparsers(parser):
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def test_every_option_has_help_and_shows_its_default():
    parser = cli.build_parser()
    for name, sub in _subparsers(parser).items():
        for action in sub._actions:
            if action.help is argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"
            if action.option_strings and action.default not in (None, False):
                text = sub.formatter_class(prog="x")._get_help_string(action)
                assert "(default" in text, f"{name} {action.option_strings} hides its default"


@pytest.mark.parametrize("command", [[], ["fit"], ["sample"], ["score"], ["info"]])
def test_help_exits_zero(command, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(command + ["--help"])
    assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.split())     # undo line wrapping
    if command == ["fit"]:
        assert "(default: jaxflows-run)" in text and "(default: maf)" in text
        assert "(default: 64,64)" in text and "--array" in text
    if command == ["sample"]:
        assert "(default: 1000)" in text


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"jaxflows {jaxflows.__version__}"


def test_old_key_option_names_the_new_one(capsys):
    assert cli.main(["fit", "data.npz", "--key", "x"]) == 2
    err = capsys.readouterr().err
    assert "--key was renamed --array" in err and "--array x" in err


@pytest.mark.parametrize("n", [1, 8, 15, 50, 142, 354, 1438, 3000, 60000])
def test_auto_batch_size_uses_nearly_every_row(n):
    b = cli.auto_batch_size(n)
    steps, left_out = n // b, n % b
    assert 1 <= b <= min(n, 256)
    assert left_out < steps                      # fewer rows left out than steps per epoch
    if n >= 160:
        assert steps >= 10


def test_small_data_batch_is_chosen_and_said(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(443, 2))                # 354 training rows after the 80/10/10 split
    x[:, 1] = x[:, 0] + 0.1 * x[:, 1]            # correlated: two epochs leave room to improve
    np.save(tmp_path / "x.npy", x)
    code = cli.main(["fit", str(tmp_path / "x.npy"), "--layers", "1", "--hidden", "8",
                     "--epochs", "2", "--no-plot", "--no-progress", "--out", str(tmp_path / "run")])
    assert code == 0
    out = capsys.readouterr().out
    assert "batch size 32, chosen from the 354 training rows (11 steps per epoch" in out
    assert "+-" in out.split("test log-likelihood")[1].splitlines()[0]
    assert "not converged" in out and "--epochs 4" in out


@pytest.fixture(scope="module")
def csv_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("csv")
    rng = np.random.default_rng(1)
    x = rng.normal(size=(120, 3)) * [1.0, 5.0, 0.5] + [0.0, 20.0, -1.0]
    with open(d / "table.csv", "w") as f:
        f.write("height,weight (kg),label\n")
        for row in x:
            f.write(f"{row[0]:.5f},{row[1]:.5f},{int(row[2] > -1)}\n")
    code = cli.main(["fit", str(d / "table.csv"), "--drop", "label", "--layers", "1",
                     "--hidden", "8", "--epochs", "2", "--no-progress", "--out", str(d / "run")])
    assert code == 0
    return d


def test_sample_csv_keeps_column_names(csv_run):
    out = csv_run / "samples.csv"
    assert cli.main(["sample", str(csv_run / "run" / "model.ckpt"), "-n", "7", "--out", str(out)]) == 0
    assert out.read_text().splitlines()[0] == "height,weight (kg)"
    assert column_names(out) == ["height", "weight (kg)"]
    assert load_array(out).shape == (7, 2)


def test_score_csv_has_a_header(csv_run):
    out = csv_run / "scores.csv"
    assert cli.main(["score", str(csv_run / "run" / "model.ckpt"), str(csv_run / "table.csv"),
                     "--drop", "label", "--out", str(out)]) == 0
    assert out.read_text().splitlines()[0] == "log_likelihood"
    assert load_array(out).shape == (120, 1)


def test_report_labels_axes_with_column_names(csv_run, monkeypatch):
    seen = {}
    import matplotlib.axes
    real_set = matplotlib.axes.Axes.set

    def spy(self, **kw):
        seen.setdefault("xlabel", []).append(kw.get("xlabel"))
        return real_set(self, **kw)

    monkeypatch.setattr(matplotlib.axes.Axes, "set", spy)
    from jaxflows.report import write_report
    hist = {"train_loss": [2.0, 1.5], "val_loss": [2.1, 1.7], "best_epoch": 1}
    rows = np.random.default_rng(0).normal(size=(50, 16))
    path = write_report(str(csv_run / "r.png"), hist, rows, rows + 0.1,
                        columns=[f"px{i}" for i in range(16)], image_shape=(4, 4))
    assert os.path.getsize(path) > 0
    assert "px0" in seen["xlabel"] and "epoch" in seen["xlabel"]


def test_non_numeric_column_hint_uses_cli_spelling(tmp_path, capsys):
    (tmp_path / "t.csv").write_text("a,b,kind\n1,2,x\n3,4,y\n")
    assert cli.main(["fit", str(tmp_path / "t.csv"), "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert "--drop kind" in err and "drop=" not in err


def test_nan_guard_hint_offers_cli_flags(tmp_path, capsys, monkeypatch):
    import jaxflows.train

    def exploding_fit(*args, **kwargs):
        raise jaxflows.TrainingDiverged("training stopped at epoch 0: NaN loss.", epoch=0)

    monkeypatch.setattr(jaxflows.train, "fit", exploding_fit)
    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(50, 2)))
    assert cli.main(["fit", str(tmp_path / "x.npy"), "--no-progress", "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert "--clip 1.0" in err and "--lr 0.0001" in err


def test_ctrl_c_keeps_best_model_and_says_how_to_resume(tmp_path, capsys, monkeypatch):
    import jaxflows.train
    real_fit = jaxflows.train.fit

    def interrupted_fit(*args, **kwargs):
        real_fit(*args, **{**kwargs, "num_epochs": 2})     # two epochs, then "Ctrl-C"
        raise KeyboardInterrupt

    monkeypatch.setattr(jaxflows.train, "fit", interrupted_fit)
    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(60, 2)))
    out_dir = tmp_path / "r"
    argv = ["fit", str(tmp_path / "x.npy"), "--layers", "1", "--hidden", "8", "--no-progress",
            "--out", str(out_dir)]
    assert cli.main(argv) == 130
    out = capsys.readouterr().out
    assert "stopped after 2 epochs" in out and str(out_dir / "model.ckpt") in out
    assert "--resume" in out
    ckpt = jaxflows.load(str(out_dir / "model.ckpt"))
    assert ckpt.metadata.get("interrupted") is True
    monkeypatch.setattr(jaxflows.train, "fit", real_fit)
    resumed = [a for a in out.split("continue training with:")[1].split()[1:]]
    assert cli.main(resumed + ["--epochs", "3"]) == 0


def test_score_with_extra_column_names_it(csv_run, capsys):
    assert cli.main(["score", str(csv_run / "run" / "model.ckpt"), str(csv_run / "table.csv"),
                     "--out", str(csv_run / "x.npy")]) == 1
    assert "--drop label" in capsys.readouterr().err
