"""Command lines: --help of every console script, train -> evaluate -> predict, user errors."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from interplay.core.cli import core_main, format_table, umbrella_main

SCRIPTS = [
    "interplay",
    "interplay-core",
    "interplay-recsys",
    "interplay-eeg",
    "interplay-bio",
    "interplay-vision",
    "interplay-tabular",
]
SUBCOMMANDS = ["train", "evaluate", "predict", "reproduce", "models", "datasets", "download", "configs"]
BIN = Path(sys.executable).parent


def script(name: str) -> str:
    path = shutil.which(name, path=str(BIN)) or shutil.which(name)
    if path is None:
        pytest.fail(f"console script {name} is not installed")
    return path


@pytest.mark.parametrize("name", SCRIPTS)
def test_console_script_help(name):
    out = subprocess.run([script(name), "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    if name == "interplay":
        for domain in ("core", "recsys", "eeg", "bio", "vision", "tabular"):
            assert f"  {domain}" in out.stdout
    else:
        for sub in SUBCOMMANDS:
            assert sub in out.stdout


@pytest.mark.parametrize("sub", SUBCOMMANDS)
def test_subcommand_help(sub, capsys):
    with pytest.raises(SystemExit) as exit_info:
        core_main([sub, "--help"])
    assert exit_info.value.code == 0
    assert f"interplay-core {sub}" in capsys.readouterr().out


def test_umbrella_dispatches_to_domain(capsys):
    assert umbrella_main(["core", "models"]) == 0
    assert "transformer-classifier" in capsys.readouterr().out
    from interplay.recsys.cli import main as recsys_main

    assert umbrella_main(["recsys", "models"]) == 0
    via_umbrella = capsys.readouterr().out
    assert recsys_main(["models"]) == 0
    assert via_umbrella == capsys.readouterr().out and via_umbrella.strip()
    assert umbrella_main(["nosuch", "models"]) == 2
    assert "unknown domain 'nosuch'" in capsys.readouterr().err


def test_listings(capsys):
    assert core_main(["datasets"]) == 0
    assert "digits" in capsys.readouterr().out
    assert core_main(["configs"]) == 0
    assert "digits-transformer" in capsys.readouterr().out
    assert core_main(["download", "digits"]) == 0
    assert "nothing to download" in capsys.readouterr().out


def test_train_evaluate_predict_round_trip(tiny_yaml, tmp_path, capsys):
    assert core_main(["train", "--config", str(tiny_yaml), "trainer.max_epochs=3"]) == 0
    out = capsys.readouterr().out
    assert "test/acc" in out
    run_dir = Path(out.split("run directory: ")[1].split()[0])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs"] == 3
    best = metrics["best_checkpoint"]

    out_json = tmp_path / "eval.json"
    assert core_main(["evaluate", "--checkpoint", best, "--output", str(out_json)]) == 0
    evaluated = json.loads(out_json.read_text())
    assert evaluated["test/acc"] == pytest.approx(metrics["test"]["test/acc"], abs=1e-6)
    assert core_main(["evaluate", "--checkpoint", best, "--split", "val"]) == 0
    assert "val/acc" in capsys.readouterr().out

    preds = tmp_path / "preds.csv"
    assert core_main(["predict", "--checkpoint", best, "--output", str(preds)]) == 0
    rows = list(csv.DictReader(preds.open()))
    from sklearn.datasets import load_digits

    from interplay.core.datamodules import stratified_split

    expected = len(stratified_split(load_digits().target, 0.1, 0.2, seed=0)["test"])
    assert len(rows) == expected and 350 <= expected <= 370  # about 20% of 1,797 digits
    assert {"index", "pred", "target", "prob_0", "prob_9"} <= set(rows[0])
    acc = sum(r["pred"] == r["target"] for r in rows) / len(rows)
    assert acc == pytest.approx(metrics["test"]["test/acc"], abs=1e-6)
    assert sum(float(rows[0][f"prob_{k}"]) for k in range(10)) == pytest.approx(1.0, abs=1e-5)


def test_reproduce_compares_with_reported(tiny_dict, tmp_path, capsys):
    import yaml

    tiny_dict["reported"] = {"test/acc": 0.0, "test/f1": 2.0}
    tiny_dict["tolerance"] = {"test/acc": 0.0, "test/f1": 0.0}
    path = tmp_path / "repro.yaml"
    path.write_text(yaml.safe_dump(tiny_dict))
    assert core_main(["reproduce", str(path)]) == 0
    assert core_main(["reproduce", str(path), "--strict"]) == 1  # f1 can never reach 2.0
    out = capsys.readouterr().out
    run_dir = Path(out.split("run directory: ")[-1].split()[0])
    report = json.loads((run_dir / "reproduction.json").read_text())["metrics"]
    assert report["test/acc"]["reached"] is True and report["test/f1"]["reached"] is False


def test_reproduce_checks_claims_against_baselines_over_seeds(tiny_dict, tmp_path, capsys):
    import yaml

    # the claim "ours beats an untrained copy" holds; "ours beats itself" cannot (not strictly greater)
    tiny_dict["baselines"] = {"untrained": ["optimizer.lr=1e-9"], "same": []}
    tiny_dict["must_beat"] = {"test/acc": ["untrained"], "test/f1": ["same"]}
    tiny_dict["reproduce_seeds"] = [0, 1]
    path = tmp_path / "claims.yaml"
    path.write_text(yaml.safe_dump(tiny_dict))
    assert core_main(["reproduce", str(path), "--strict"]) == 1
    out = capsys.readouterr().out
    assert "seeds [0, 1]" in out and "untrained" in out
    run_dir = Path(out.split("run directory: ")[-1].split()[0])
    saved = json.loads((run_dir / "reproduction.json").read_text())
    assert saved["seeds"] == [0, 1] and all(len(v) == 2 for v in saved["runs"].values())
    acc, f1 = saved["metrics"]["test/acc"], saved["metrics"]["test/f1"]
    ours = [r["test/acc"] for r in saved["runs"]["ours"]]
    assert acc["ours"] == pytest.approx(sum(ours) / 2)
    assert acc["beats"] == {"untrained": True} and acc["ok"] is True
    assert acc["baselines"]["untrained"] < acc["ours"]
    # same config and seeds: identical figures, so the claim fails
    assert f1["baselines"]["same"] == pytest.approx(f1["ours"]) and f1["ok"] is False


def test_must_beat_must_name_a_baseline(tiny_dict, tmp_path, capsys):
    import yaml

    tiny_dict["must_beat"] = {"test/acc": ["dnn"]}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(tiny_dict))
    assert core_main(["reproduce", str(path)]) == 2
    assert "must_beat.test/acc names dnn" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--config", "no-such-config"], "unknown core config 'no-such-config'"),
        (["train", "--config", "digits-transformr"], "did you mean 'digits-transformer'"),
        (["train", "--config", "missing/file.yaml"], "config file not found: missing/file.yaml"),
        (["train", "--config", "digits-transformer", "trainer.max_epoch=3"], "trainer.max_epoch"),
        (["train", "--config", "digits-transformer", "trainer.max_epochs=many"], "trainer.max_epochs"),
        (["train", "--config", "digits-transformer", "model.name=vit"], "unknown core models 'vit'"),
        (["evaluate", "--checkpoint", "nowhere.ckpt"], "checkpoint not found: nowhere.ckpt"),
        (["predict", "--checkpoint", "nowhere.ckpt", "--output", "x.csv"], "checkpoint not found"),
        (["download", "mnist"], "unknown core datasets 'mnist'"),
    ],
)
def test_user_errors_exit_2_with_one_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert core_main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()  # nothing half-written


def test_broken_checkpoint_file_is_named(tmp_path, capsys):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    assert core_main(["evaluate", "--checkpoint", str(bad)]) == 2
    assert "bad.ckpt could not be read" in capsys.readouterr().err


def test_format_table_aligns_columns():
    text = format_table([["a", 0.5], ["longer", None]], ["name", "value"])
    lines = text.splitlines()
    assert lines[0].startswith("name    value") and lines[2] == "a       0.5000" and lines[3] == "longer  -"


def test_ddp_two_processes_on_cpu(tiny_yaml, tmp_path):
    """A real 2-process DDP run (gloo) through the console script; rank 0 alone reports and tests."""
    out = subprocess.run(
        [
            script("interplay-core"),
            "train",
            "--config",
            str(tiny_yaml),
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            "trainer.strategy=ddp",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("run directory:") == 1  # only rank 0 prints
    run_dir = Path(out.stdout.split("run directory: ")[1].split()[0])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs"] == 2
    # the final test ran on one process over the whole split: it equals a fresh evaluation
    from interplay.core.demo import REGISTRY
    from interplay.core.train import evaluate

    again = evaluate(metrics["best_checkpoint"], REGISTRY)
    assert again["test/acc"] == pytest.approx(metrics["test"]["test/acc"], abs=1e-6)


def test_rejected_trainer_settings_leave_no_run_directory(tiny_yaml, tmp_path, capsys):
    root = tmp_path / "runs-fsdp"
    argv = [
        "train",
        "--config",
        str(tiny_yaml),
        f"run_root={root}",
        "trainer.accelerator=cpu",
        "trainer.strategy=fsdp",
        "trainer.devices=2",
    ]
    assert core_main(argv) == 2
    assert "requires a GPU" in capsys.readouterr().err
    assert not root.exists() or not any(p.is_file() for p in root.rglob("*"))


def test_resume_from_checkpoint_without_config(tiny_yaml, capsys):
    assert core_main(["train", "--config", str(tiny_yaml)]) == 0
    first = Path(capsys.readouterr().out.split("run directory: ")[1].split()[0])
    last = first / "checkpoints" / "last.ckpt"
    assert core_main(["train", "--resume", str(last), "trainer.max_epochs=3"]) == 0
    second = Path(capsys.readouterr().out.split("run directory: ")[1].split()[0])
    metrics = json.loads((second / "metrics.json").read_text())
    assert metrics["epochs"] == 3 and second != first
    rows = list(csv.DictReader((second / "metrics.csv").open()))
    assert {int(r["epoch"]) for r in rows if r.get("epoch")} == {2}  # only the new epoch ran
    assert core_main(["train"]) == 2
    assert "--config" in capsys.readouterr().err


def test_overrides_may_follow_options(tiny_yaml, tmp_path, capsys):
    root = tmp_path / "elsewhere"
    argv = ["train", "--config", str(tiny_yaml), "trainer.max_epochs=1", "--run-root", str(root), "seed=3"]
    assert core_main(argv) == 0
    run_dir = Path(capsys.readouterr().out.split("run directory: ")[1].split()[0])
    assert run_dir.is_relative_to(root)
    import yaml

    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["seed"] == 3 and saved["trainer"]["max_epochs"] == 1
    with pytest.raises(SystemExit):
        core_main(["models", "--bogus"])
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err
