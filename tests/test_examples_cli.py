"""The example's command line (examples/compare_losses/main.py): every flag and config value is
checked before any file is written, errors are one line with exit status 2, and a results
folder is never silently replaced by the results of another config."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("flax")
pytest.importorskip("grain")

from examples.compare_losses import configs, main
from examples.compare_losses.configs import ALL_LOSSES, Config

ROOT = Path(__file__).resolve().parents[1]
PROG = "python -m examples.compare_losses: error: "


def _fails(argv, capsys, *fragments):
    """Runs the CLI, expects exit status 2 and a one-line error holding every fragment."""
    with pytest.raises(SystemExit) as exit_info:
        main.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(PROG), err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    return err


BAD_FLAGS = {
    "negative epochs": (["--num_epochs", "-1"], "num_epochs must be >= 1, got -1"),
    "zero epochs": (["--num_epochs", "0"], "num_epochs"),
    "unknown config": (["--config", "nosuch"], "unknown config 'nosuch'", "default, "),
    "missing config file": (["--config", "nowhere/config.py"], "does not exist"),
    "unknown loss": (["--losses", "ce,nope"], "nope", ", ".join(ALL_LOSSES)),
    "repeated loss": (["--losses", "ce,ce"], "twice"),
    "no loss": (["--losses", ","], "non-empty"),
    "unknown dataset": (["--dataset", "imagenet"], "invalid choice: 'imagenet'", "'digits'"),
    "unknown model": (["--model", "vgg"], "invalid choice: 'vgg'"),
    "boundary beyond the epochs": (
        ["--num_epochs", "10", "--lr_boundaries", "5,10"],
        "lr_boundaries must be increasing epochs in [1, num_epochs) = [1, 10), got (5, 10)",
    ),
    "boundaries not increasing": (["--lr_boundaries", "30,20"], "lr_boundaries"),
    "boundary at 0": (["--lr_boundaries", "0,20"], "lr_boundaries"),
    "boundaries not integers": (["--lr_boundaries", "5,x"], "--lr_boundaries"),
    "negative seed": (["--seed", "-1"], "seed"),
    "zero clip norm": (["--clip_global_norm", "0"], "clip_global_norm"),
    "clip norm not a number": (["--clip_global_norm", "abc"], "--clip_global_norm"),
    "epochs not an integer": (["--num_epochs", "2.5"], "--num_epochs"),
    "unknown reduction": (["--loss_reduction", "avg"], "--loss_reduction"),
    "unknown mmce variant": (["--mmce_variant", "tf"], "--mmce_variant"),
    "unknown calibrator": (["--calibrators", "ts_nll,foo"], "foo", "venn_abers"),
    "repeated calibrator": (["--calibrators", "beta,beta"], "twice"),
}


@pytest.mark.parametrize("case", BAD_FLAGS)
def test_bad_flags_fail_with_one_line_before_writing(case, tmp_path, capsys):
    argv, *fragments = BAD_FLAGS[case]
    workdir = tmp_path / "results"
    _fails([*argv, "--workdir", str(workdir)], capsys, *fragments)
    assert not workdir.exists()


def test_num_epochs_rescales_the_schedule_unless_boundaries_are_given():
    def config(*argv):
        return main.make_config(main.parse_args(list(argv)))

    assert config("--num_epochs", "10").lr_boundaries == (5, 8)  # default: 20, 30 of 40
    assert config("--num_epochs", "1").lr_boundaries == ()
    paper = config("--config", "cifar10_resnet50", "--num_epochs", "35")
    assert (paper.num_epochs, paper.lr_boundaries) == (35, (15, 25))  # 149, 249 of 350
    assert config("--num_epochs", "10", "--lr_boundaries", "3").lr_boundaries == (3,)
    assert config("--lr_boundaries", "none").lr_boundaries == ()
    assert config().lr_boundaries == (20, 30)


# Field -> invalid value, set in a config file (fields without a flag are checked too).
BAD_FIELDS = {
    "dataset": "imagenet",
    "model": "vgg",
    "losses": ("ce", "hinge"),
    "num_epochs": 2.0,
    "batch_size": 0,
    "eval_batch_size": -8,
    "learning_rate": 0.0,
    "momentum": 1.0,
    "weight_decay": -1e-4,
    "lr_boundaries": [1],
    "lr_decay": 0.0,
    "loss_reduction": "none",
    "clip_global_norm": float("nan"),
    "augment": 1,
    "val_fraction": 1.0,
    "num_bins": 0,
    "seed": True,
    "mmce_weight": -2.0,
    "mmce_variant": "tensorflow",
    "ls_epsilon": 1.0,
    "ls_paper_variant": "yes",
    "checkpoint_every_epochs": 0,
    "max_train_examples": 0,
    "track_curves": None,
    "calibrators": ("ts_nll", "platt"),
}


def _source(value):
    return "float('nan')" if value != value else repr(value)


def test_every_config_field_has_a_check():
    fields = {f.name for f in dataclasses.fields(Config)}
    assert set(configs._RULES) == fields
    assert set(BAD_FIELDS) == fields


@pytest.mark.parametrize("field", BAD_FIELDS)
def test_bad_config_fields_fail_with_one_line_before_writing(field, tmp_path, capsys):
    path = tmp_path / "bad.py"
    path.write_text(
        "from examples.compare_losses import configs\n\n\n"
        "def get_config():\n"
        f"    return configs.get_config('tiny').replace({field}={_source(BAD_FIELDS[field])})\n"
    )
    workdir = tmp_path / "results"
    _fails(["--config", str(path), "--workdir", str(workdir)], capsys, field)
    assert not workdir.exists()
    with pytest.raises(configs.ConfigError, match=field):
        configs.validate(configs.get_config("tiny").replace(**{field: BAD_FIELDS[field]}))


@pytest.mark.parametrize("name", configs.available_configs())
def test_every_shipped_config_is_valid(name):
    config = configs.get_config(name)
    assert configs.validate(config) is config


def test_a_batch_larger_than_the_training_set_fails_before_writing(tmp_path, capsys):
    workdir = tmp_path / "results"
    path = tmp_path / "big_batch.py"
    path.write_text(
        "from examples.compare_losses import configs\n\n\n"
        "def get_config():\n"
        "    return configs.get_config('tiny').replace(batch_size=512)\n"
    )
    _fails(["--config", str(path), "--workdir", str(workdir)], capsys, "batch_size 512")
    assert not workdir.exists()


def test_results_of_another_config_are_never_replaced_silently(tmp_path, capsys):
    workdir = tmp_path / "results"
    base = ["--config", "tiny", "--losses", "ce", "--workdir", str(workdir), "--no_progress"]
    rows = main.main([*base, "--no_plots"])
    out = capsys.readouterr().out
    assert "Config `tiny` (hash " in out and "seed 0" in out and "mukhoti2020" in out
    # --no_progress drops the bars, not the one-line summary per loss.
    assert any(line.startswith("ce: ") and "test error" in line for line in out.splitlines())
    saved = json.loads((workdir / "results.json").read_text())
    expected = json.loads(json.dumps(dataclasses.asdict(configs.get_config("tiny"))))
    expected["losses"] = ["ce"]
    assert saved["config"] == expected and saved["config_name"] == "tiny"
    assert saved["rows"] == rows
    document = (workdir / "results.md").read_text()
    assert "Config `tiny`" in document and "seed 0" in document
    before = {p.name: p.read_bytes() for p in workdir.iterdir() if p.is_file()}

    # Another seed, another loss list: refused, naming --overwrite, nothing touched.
    for extra in (["--seed", "1"], ["--losses", "ce,fl3"]):
        err = _fails([*base, *extra], capsys, "--overwrite", str(workdir))
        assert ("seed: 0 there, 1 here" in err) or ("losses" in err)
        assert {p.name: p.read_bytes() for p in workdir.iterdir() if p.is_file()} == before

    # The same config again is allowed (it resumes from its checkpoints).
    again = main.main([*base, "--no_plots"])
    assert [r["ece"] for r in again] == [r["ece"] for r in rows]
    capsys.readouterr()

    # --overwrite replaces the results, and removes the old run's plots.
    (workdir / "reliability_fl3.png").write_bytes(b"stale")
    main.main([*base, "--seed", "1", "--overwrite", "--no_plots"])
    saved = json.loads((workdir / "results.json").read_text())
    assert saved["config"]["seed"] == 1
    assert not (workdir / "reliability_fl3.png").exists()
    assert "seed 1" in (workdir / "results.md").read_text()


def test_help_lists_every_config_with_its_summary(capsys):
    with pytest.raises(SystemExit) as exc:
        main.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    listing = out[out.index("configs (--config NAME):") :]
    for name in configs.available_configs():
        assert f"\n  {name} " in listing, name
    assert "Smoke-test config: two epochs on 256 digits" in listing  # what `tiny` is
    assert "--no_progress" in out and "summary per loss" in out


def test_subprocess_errors_are_one_line_without_traceback(tmp_path):
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    workdir = tmp_path / "results"
    for argv, fragment in (
        (["--num_epochs", "-1"], "num_epochs must be >= 1"),
        (["--config", "nosuch"], "overconfident"),
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "examples.compare_losses", *argv, "--workdir", str(workdir)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr and proc.stdout == ""
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(PROG) and fragment in lines[0]
        assert not workdir.exists()
