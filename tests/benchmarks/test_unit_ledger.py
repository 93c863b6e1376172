"""The unit ledger (finished units found again on a fresh checkout), rows carried from a
replaced result file, and the benchmark helpers' docstring examples."""

from __future__ import annotations

import doctest
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import _carried
import _planners
import _seeds
import _unit_store
import method_compare
from _carried import carried_rows, previous_result
from _unit_store import UnitStore

SETTINGS = {"method": "msp", "eq_bits": 4, "seed": 0}


@pytest.mark.parametrize("module", [_seeds, _unit_store, _carried, _planners, method_compare])
def test_benchmark_helper_examples_run(module: object) -> None:
    failures, tried = doctest.testmod(module, verbose=False)  # type: ignore[arg-type]
    assert tried > 0 and failures == 0


def _store(tmp_path: Path, work: str = "runs") -> UnitStore:
    return UnitStore(tmp_path / work, ledger=tmp_path / "ledger", kept_files=("plan.json",))


def test_a_saved_unit_and_its_plan_survive_the_loss_of_the_work_dir(tmp_path: Path) -> None:
    store = _store(tmp_path)
    folder = store.unit_dir("msp-w4-s0", SETTINGS)
    folder.mkdir(parents=True)
    (folder / "plan.json").write_text('{"layers": {"conv": 1}}')
    (folder / "train.pt").write_text("a checkpoint, not kept")
    store.save("msp-w4-s0", SETTINGS, {"top1": 0.8123})
    fresh = _store(tmp_path, "fresh-checkout")
    assert fresh.load("msp-w4-s0", SETTINGS) == {"top1": 0.8123}
    assert fresh.kept_file("msp-w4-s0", SETTINGS, "plan.json") == '{"layers": {"conv": 1}}'
    assert fresh.kept_file("msp-w4-s0", SETTINGS, "train.pt") is None
    record = json.loads(next((tmp_path / "ledger").iterdir()).read_text())
    assert set(record["files"]) == {"plan.json"} and record["settings"]["seed"] == 0


def test_a_unit_finished_before_the_ledger_is_copied_there_when_loaded(tmp_path: Path) -> None:
    UnitStore(tmp_path / "runs").save("fixed-w4-s1", SETTINGS, {"top1": 0.8209})
    assert not (tmp_path / "ledger").exists()
    assert _store(tmp_path).load("fixed-w4-s1", SETTINGS) == {"top1": 0.8209}
    assert _store(tmp_path, "elsewhere").load("fixed-w4-s1", SETTINGS) == {"top1": 0.8209}


def test_the_ledger_answers_only_for_equal_settings_and_whole_records(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.save("msp-w4-s0", SETTINGS, {"top1": 0.81})
    fresh = _store(tmp_path, "fresh")
    assert fresh.load("msp-w4-s0", {**SETTINGS, "seed": 1}) is None
    ledger_file = store.ledger_path("msp-w4-s0", SETTINGS)
    assert ledger_file is not None
    ledger_file.write_text('{"settings": {"method": "msp"')  # cut mid-write
    assert fresh.load("msp-w4-s0", SETTINGS) is None


def test_a_ledger_record_is_never_overwritten(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.save("msp-w4-s0", SETTINGS, {"top1": 0.81})
    redone = _store(tmp_path, "other")
    redone.save("msp-w4-s0", SETTINGS, {"top1": 0.99})
    assert _store(tmp_path, "third").load("msp-w4-s0", SETTINGS) == {"top1": 0.81}


def _previous(tmp_path: Path, settings: dict, name: str = "method_compare.json") -> Path:
    rows = [
        {"method": "fp32", "top1": 0.81},
        {"method": "fixed3", "eq_bits_target": 3, "top1_mean": 0.818},
        {"method": "fixed4", "eq_bits_target": 4, "top1_mean": 0.824},
    ]
    result = {"created": "2026-12-02T05:00:00Z", "settings": settings, "rows": rows}
    path = tmp_path / name
    path.write_text(json.dumps(result))
    return path


def test_rows_without_units_are_carried_when_settings_agree(tmp_path: Path) -> None:
    path = _previous(tmp_path, {"qat": {"epochs": 3}, "seeds": [0, 1, 2]})
    rows, note = carried_rows([previous_result(path)], {("fixed4", 4)}, {"qat": {"epochs": 3}})
    assert [r["method"] for r in rows] == ["fixed3"]  # fixed4 has units now; fp32 is recomputed
    assert rows[0]["carried_from"] == "2026-12-02T05:00:00Z"
    assert note["levels"] == [3] and note["rows"] == ["fixed3@w3"]
    # A row is keyed by method and level: another method at W4 leaves fixed4 carried.
    rows, note = carried_rows([previous_result(path)], {("msp", 4)}, {"qat": {"epochs": 3}})
    assert note["rows"] == ["fixed3@w3", "fixed4@w4"] and note["levels"] == [3, 4]
    reported = {("fixed3", 3), ("fixed4", 4)}
    rows, note = carried_rows([previous_result(path)], reported, {"qat": {"epochs": 3}})
    assert rows == [] and note["levels"] == [] and note["from"] == []


def test_the_first_file_with_a_row_gives_it(tmp_path: Path) -> None:
    replaced = json.loads(_previous(tmp_path, {"qat": {"epochs": 3}}).read_text())
    replaced["rows"] = replaced["rows"][:2]  # fp32 and fixed3 only
    other = {**replaced, "created": "2026-12-01T00:00:00Z"}
    other["rows"] = [{"method": "fixed3", "eq_bits_target": 3, "top1_mean": 0.5}]
    other["rows"] += [{"method": "sp2-4", "eq_bits_target": 4, "top1_mean": 0.825}]
    rows, note = carried_rows([replaced, None, other], set(), {"qat": {"epochs": 3}})
    assert [(r["method"], r["top1_mean"]) for r in rows] == [("fixed3", 0.818), ("sp2-4", 0.825)]
    assert [r["carried_from"] for r in rows] == ["2026-12-02T05:00:00Z", "2026-12-01T00:00:00Z"]
    assert note["from"] == ["2026-12-02T05:00:00Z", "2026-12-01T00:00:00Z"]


def test_a_row_carried_twice_keeps_the_time_of_the_file_that_measured_it() -> None:
    first = {"created": "2026-12-01T00:00:00Z", "settings": {}, "rows": []}
    first["rows"] = [{"method": "msp", "eq_bits_target": 3, "top1_mean": 0.81}]
    second_rows, _ = carried_rows([first], set(), {})
    second = {"created": "2026-12-02T00:00:00Z", "settings": {}, "rows": second_rows}
    third_rows, note = carried_rows([second], set(), {})
    assert third_rows[0]["carried_from"] == "2026-12-01T00:00:00Z"
    assert note["from"] == ["2026-12-02T00:00:00Z"]


def test_nothing_is_carried_from_a_file_made_with_other_settings(tmp_path: Path) -> None:
    path = _previous(tmp_path, {"qat": {"epochs": 3}, "seeds": [0, 1, 2]})
    rows, note = carried_rows([previous_result(path)], set(), {"qat": {"epochs": 5}})
    assert rows == [] and "qat" in note["not_carried"][0]
    assert carried_rows([previous_result(tmp_path / "absent.json")], set(), {})[0] == []
    (tmp_path / "bad.json").write_text("{not json")
    assert previous_result(tmp_path / "bad.json") is None


def test_carry_from_does_not_change_a_units_key() -> None:
    plain = method_compare.parse_args(["--seeds", "0", "1", "2"])
    carrying = method_compare.parse_args(["--seeds", "0", "1", "2", "--carry-from", "a.json"])
    assert carrying.carry_from == [Path("a.json")]
    for method in ("fixed", "hawq-v3-ilp", "dfq"):
        assert method_compare.unit_settings(plain, method, 4, 0) == (
            method_compare.unit_settings(carrying, method, 4, 0)
        )


def test_the_settings_block_covers_a_carried_level_and_its_convergence() -> None:
    args = method_compare.parse_args(["--seeds", "0", "1", "2", "--eq-bits", "4"])

    def row(method: str, level: int, series: list[float], se: float) -> dict:
        return {
            "method": method,
            "eq_bits_target": level,
            "seeds": [0, 1, 2],
            "top1_per_epoch": series,
            "top1_se": se,
            "top1_mean": series[-1],
            "fpga_images_per_s": {"xc7z020": 100.0, "xc7z045": 400.0},
            "weight_kib": 100.0,
        }

    rows = [row("fixed3", 3, [0.80, 0.82], 0.001), row("sp2-3", 3, [0.81, 0.79], 0.001)]
    rows += [row("fixed4", 4, [0.81, 0.83], 0.001), row("msp", 4, [0.80, 0.82], 0.001)]
    carried = {"levels": [3], "from": "2026-12-02T05:00:00Z", "why": "test"}
    settings = method_compare.result_settings(args, rows, {"top1": 0.81}, carried)
    assert settings["eq_bits_levels"] == [3, 4]
    assert settings["convergence"]["w3"]["resolved_flipped"] == [["fixed3", "sp2-3"]]
    assert settings["convergence"]["w4"]["resolved_flipped"] == []
    assert settings["carried"] == carried
    agreed = set(method_compare.AGREED_SETTINGS)
    assert agreed <= set(settings) and "created" not in agreed


def test_a_planned_unit_without_its_plan_is_not_refreshed_as_a_uniform_one() -> None:
    args = method_compare.parse_args(["--seeds", "0", "1", "2"])
    with pytest.raises(method_compare.BenchmarkSettingsError, match="no stored plan"):
        method_compare.refreshed_hardware(args, None, {}, None, "hawq-v3-ilp", 3)  # type: ignore[arg-type]


def test_a_result_whose_rows_are_all_there_is_complete_even_when_carried() -> None:
    args = method_compare.parse_args(["--seeds", "0", "1", "2", "--eq-bits", "4"])
    args.methods = ["fixed", "msp"]
    row = {"eq_bits_target": 4, "seeds": [0, 1, 2], "top1_per_epoch": [0.8], "top1_se": 0.001}
    row |= {
        "top1_mean": 0.8,
        "weight_kib": 1.0,
        "fpga_images_per_s": {"xc7z020": 1.0, "xc7z045": 2.0},
    }
    rows = [{**row, "method": "fixed4", "carried_from": "2026-12-01T00:00:00Z"}]
    rows += [{**row, "method": "msp"}]
    settings = method_compare.result_settings(args, rows, {"top1": 0.81}, None, True)
    assert settings["complete"] and settings["units_left_this_chunk"]
    settings = method_compare.result_settings(args, rows[:1], {"top1": 0.81})
    assert not settings["complete"]
