"""models/sweep.py: the typed grid, its cells, their configs, the summary table."""

from __future__ import annotations

import pytest

from models.sweep import (
    CELL_EPOCHS,
    MAX_CELLS,
    SweepError,
    SweepGrid,
    cell_config,
    cell_fields,
    cells,
    demo_grid,
    parse_axis,
    summary_rows,
    summary_table,
    validate_grid,
)


def test_the_demo_grid_expands_row_major_into_eight_runs_with_the_budget() -> None:
    grid = demo_grid(max_steps=150)
    out = cells(grid)
    assert [c.index for c in out] == list(range(8))
    # The last axis varies fastest; positions index each axis.
    assert out[0].coords == {"epsilon": 0.005, "num_prototypes": 16}
    assert out[1].coords == {"epsilon": 0.005, "num_prototypes": 128}
    assert out[7].position == (3, 1)
    cfg = cell_config(grid, out[5])
    assert (cfg.swav.epsilon, cfg.swav.num_prototypes) == (0.05, 128)
    assert cfg.max_steps == 150 and cfg.epochs == CELL_EPOCHS


def test_shared_fields_apply_to_every_cell_and_an_axis_wins_over_them() -> None:
    grid = SweepGrid.model_validate(
        {
            "axes": [{"field": "batch_size", "values": [16, 32]}],
            "fields": {"batch_size": 64, "width": 8},
            "max_steps": 5,
        }
    )
    sizes = [cell_config(grid, c).batch_size for c in cells(grid)]
    assert sizes == [16, 32]
    assert all(cell_fields(grid, c)["width"] == 8 for c in cells(grid))


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        ({"axes": [{"field": "nonsense", "values": [1]}]}, ["unknown field 'nonsense'", "epsilon"]),
        ({"axes": [{"field": "max_steps", "values": [1, 2]}]}, ["fixed for the whole sweep"]),
        ({"axes": [{"field": "epsilon", "values": [0.1, 0.1]}]}, ["given twice"]),
        ({"axes": []}, ["axes"]),
        (
            {"axes": [{"field": "epsilon", "values": [0.1]}, {"field": "epsilon", "values": [1]}]},
            ["given twice", "two different fields"],
        ),
        (
            {
                "axes": [
                    {"field": "epsilon", "values": [0.01, 0.02, 0.03, 0.04, 0.05, 0.06]},
                    {"field": "num_prototypes", "values": [4, 8, 16, 32, 64, 128]},
                ]
            },
            [f"more than {MAX_CELLS}"],
        ),
        ({"axes": [{"field": "epsilon", "values": [0.05, 0.001]}]}, ["cell 1", "epsilon=0.001"]),
        ({"axes": [{"field": "lr", "values": [0.1]}], "max_steps": 0}, ["max_steps"]),
        (
            {"method": "pcl", "axes": [{"field": "epsilon", "values": [0.05]}]},
            ["'epsilon' is a SwAV field", "a pcl run ignores it"],
        ),
    ],
)
def test_a_bad_grid_is_refused_with_a_message_naming_what_to_fix(
    payload: dict, words: list[str]
) -> None:
    with pytest.raises(SweepError) as err:
        validate_grid(payload)
    for word in words:
        assert word in str(err.value)


def test_axes_parse_from_the_command_line_syntax() -> None:
    axis = parse_axis("equipartition=true,false")
    assert axis.field == "equipartition" and axis.values == [True, False]
    assert parse_axis("epsilon=0.005, 0.05").values == [0.005, 0.05]
    for bad in ("epsilon", "epsilon=", "=1,2", "epsilon=1,,2", "foo=1,2"):
        with pytest.raises(SweepError, match="--grid"):
            parse_axis(bad)


def test_the_summary_has_a_row_per_cell_and_marks_missing_ones_pending() -> None:
    grid = demo_grid()
    results = {
        2: {"status": "completed", "step": 200, "final_loss": 2.5, "knn_top1": 0.4321},
        5: {"status": "completed", "verdict": "one-cluster collapse", "knn_top1": 0.12},
    }
    rows = summary_rows(grid, results)
    assert len(rows) == 8
    assert rows[2]["epsilon"] == 0.02 and rows[2]["knn_top1"] == 0.4321
    assert rows[0]["status"] == "pending" and rows[0]["verdict"] is None
    text = summary_table(rows).splitlines()
    assert text[0].split() == list(rows[0])
    assert "43.2%" in text[3] and "one-cluster collapse" in text[6]
    assert len(text) == 9
