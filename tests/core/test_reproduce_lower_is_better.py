"""``reproduce`` with error metrics: ``lower_is_better`` flips the paper and baseline comparisons."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from interplay.core.cli import core_main


def _report(capsys) -> dict:
    out = capsys.readouterr().out
    run_dir = Path(out.split("run directory: ")[-1].split()[0])
    return out, json.loads((run_dir / "reproduction.json").read_text())["metrics"]


def test_lower_is_better_flips_claims_and_paper_check(tiny_dict, tmp_path, capsys):
    # an untrained copy (lr 1e-9) has a larger test loss: "ours beats untrained" holds only when a
    # smaller loss counts as better (without the flag the same figures fail the claim)
    tiny_dict["baselines"] = {"untrained": ["optimizer.lr=1e-9"]}
    tiny_dict["must_beat"] = {"test/loss": ["untrained"]}
    tiny_dict["reported"] = {"test/loss": 100.0}  # any cross-entropy of a trained model is below 100
    tiny_dict["tolerance"] = {"test/loss": 0.0}
    tiny_dict["lower_is_better"] = ["test/loss"]
    path = tmp_path / "lower.yaml"
    path.write_text(yaml.safe_dump(tiny_dict))
    assert core_main(["reproduce", str(path)]) == 0
    out, report = _report(capsys)
    loss = report["test/loss"]
    assert "test/loss (lower is better)" in out
    assert loss["lower_is_better"] is True
    assert loss["ours"] < loss["baselines"]["untrained"]
    assert loss["reached"] is True  # ours <= 100 + 0
    assert loss["beats"] == {"untrained": True} and loss["ok"] is True
