"""`protoscope sweep`: bad grids exit 2 with a message; a real tiny sweep writes one folder per
cell and a summary; `--cell I` runs one cell (a job array's task) and `--collect` tabulates."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from protoscope.cli import main
from tests.support import ROOT

# tests/support.tiny_run_config as --set flags: a cell trains in about a second.
TINY = [
    "width=8",
    "batch_size=32",
    "data.num_train=256",
    "data.image_size=16",
    "swav.hidden_dim=32",
    "swav.feat_dim=16",
    "swav.freeze_prototypes_iters=2",
    "amp=off",
    "eval_max_images=200",
    "knn_every_steps=null",
]


def _sweep(out: Path, *extra: str) -> list[str]:
    flags = [f"--set={item}" for item in TINY]
    return ["sweep", "--out", str(out), "--max-steps", "4", "--quiet", *flags, *extra]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--grid", "epsilon=0.001,0.05"], "cell 0 (epsilon=0.001)"),
        (["--grid", "bogus=1,2"], "unknown field 'bogus'"),
        (["--grid", "epsilon"], "expected FIELD=V1,V2"),
        ([], "give at least one --grid"),
        (["--grid", "epsilon=0.05", "--max-steps", "0"], "--max-steps 0"),
        (["--grid", "epsilon=0.05", "--cell", "3"], "--cell 3: this grid has cells 0–0"),
        (["--collect"], "holds no sweep"),
    ],
)
def test_a_bad_sweep_exits_2_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], says: str
) -> None:
    with pytest.raises(SystemExit) as done:
        main(["sweep", "--out", str(tmp_path / "s"), *args])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err


def test_the_command_line_exits_2_without_a_traceback(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "protoscope", "sweep", "--grid", "epsilon=9e9"]
    proc = subprocess.run(
        [*cmd, "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert "epsilon=9000000000.0" in proc.stderr and "Traceback" not in proc.stderr


def test_a_tiny_sweep_writes_cell_folders_and_a_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "eps"
    grid = ["--grid", "epsilon=0.03,0.3", "--diagnose-images", "100"]
    # One array task first: only its folder, no summary (that is --collect's job).
    assert main(_sweep(out, *grid, "--cell", "1")) == 0
    assert sorted(p.name for p in out.iterdir()) == ["cell-001", "sweep.json"]
    result = json.loads((out / "cell-001" / "result.json").read_text())
    assert result["coords"] == {"epsilon": 0.3} and result["step"] == 4
    config = json.loads((out / "cell-001" / "config.json").read_text())
    assert config["swav"]["epsilon"] == 0.3 and config["max_steps"] == 4
    capsys.readouterr()

    # The whole sweep: cell 1 is done already, only cell 0 trains; then the summary.
    assert main(_sweep(out, *grid)) == 0
    printed = capsys.readouterr().out
    assert "sweep: cell 0 (epsilon=0.03)" in printed
    assert "sweep: cell 1" not in printed
    with (out / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["epsilon"] for r in rows] == ["0.03", "0.3"]
    for row in rows:
        assert row["status"] == "completed" and row["step"] == "4"
        assert 0.0 <= float(row["knn_top1"]) <= 1.0
        assert row["verdict"] and float(row["final_loss"]) > 0
        assert (out / f"cell-{int(row['cell']):03d}" / "checkpoints" / "last.pt").is_file()
    assert json.loads((out / "summary.json").read_text())[1]["epsilon"] == 0.3
    assert rows[0]["verdict"] in printed

    # --collect rebuilds the summary from the folders alone, reading the grid from sweep.json.
    (out / "summary.csv").unlink()
    assert main(["sweep", "--out", str(out), "--collect"]) == 0
    assert (out / "summary.csv").is_file()

    # A task cut off while writing its result.json left half a file: not "done", not a crash.
    (out / "cell-000" / "result.json").write_text('{"cell": 0, "coo')
    capsys.readouterr()
    assert main(["sweep", "--out", str(out), "--collect"]) == 0
    with (out / "summary.csv").open() as f:
        collected = {r["epsilon"]: r for r in csv.DictReader(f)}
    assert collected["0.03"]["status"] == "pending" and collected["0.3"]["status"] == "completed"
    assert main(_sweep(out, *grid)) == 0  # the whole sweep again: cell 0 runs once more
    assert "sweep: cell 0 (epsilon=0.03)" in capsys.readouterr().out

    # The same folder with another grid is refused, not mixed.
    with pytest.raises(SystemExit) as done:
        main(_sweep(out, "--grid", "epsilon=0.05"))
    assert done.value.code == 2
    assert "holds another sweep" in capsys.readouterr().err
