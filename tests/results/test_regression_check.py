"""``uss-bench check``: tolerance classes at their boundaries, like-with-like matching, exit codes."""

from __future__ import annotations

import pandas as pd
import pytest
from results_factories import make_record, reported_frame, reported_row, write_records, write_reported_csv

from uss_bench.cli import main
from uss_bench.results.check import (
    Tolerance,
    ToleranceError,
    against_baseline,
    against_reported,
    aggregate_like,
    format_result,
    parse_tolerance,
)
from uss_bench.results.export import export_records, read_export, records_frame
from uss_bench.results.reproduced import aggregate


def runs(values, steps=100, **spec):
    return [make_record(f"r{seed}", seed=seed, steps=steps, metrics={"cluster_crf": {"acc": v}}, **spec)
            for seed, v in enumerate(values)]


def check(values, reported=50.0, steps=100, tol=None, **spec):
    agg = aggregate(records_frame(runs(values, steps, **spec)))
    return against_reported(reported_frame([reported_row(value=reported)]), agg, tol or Tolerance())


@pytest.mark.parametrize("value, ok", [(50.5, True), (49.5, True), (50.51, False), (49.49, False)])
def test_checkpoint_class_is_half_a_point(value, ok):
    result = check([value], steps=0)  # zero training steps: evaluated released weights
    assert result.compared.iloc[0]["class"] == "checkpoint"
    assert result.compared.iloc[0]["tolerance"] == 0.5
    assert result.exit_code == (0 if ok else 1)


@pytest.mark.parametrize("value, ok", [(52.0, True), (48.0, True), (52.01, False), (47.99, False)])
def test_retrain_class_is_two_points_for_a_single_seed(value, ok):
    result = check([value])
    assert result.compared.iloc[0]["class"] == "retrain"
    assert result.exit_code == (0 if ok else 1)


@pytest.mark.parametrize("reported, ok", [(48.0, True), (56.0, True), (47.9, False), (56.1, False)])
def test_retrain_widens_to_two_sigma_over_seeds(reported, ok):
    result = check([50.0, 52.0, 54.0], reported=reported)  # mean 52, std 2 -> tolerance max(2, 4) = 4
    row = result.compared.iloc[0]
    assert (row["mean"], row["std"], row["n"], row["tolerance"]) == (52.0, 2.0, 3, 4.0)
    assert result.exit_code == (0 if ok else 1)


def test_small_spread_keeps_the_two_point_floor():
    result = check([50.0, 50.2, 50.4], reported=48.2)  # std 0.2 -> 2 sigma 0.4 < 2; delta +2.0
    assert result.compared.iloc[0]["tolerance"] == 2.0 and result.exit_code == 0


def test_overrides_most_specific_wins():
    tol = parse_tolerance(["cocostuff27=1.0", "cluster.acc=0.3"])
    assert tol.points("checkpoint", "cocostuff27", "cluster.acc") == 0.3
    assert tol.points("checkpoint", "cocostuff27", "cluster.miou") == 1.0
    tol = parse_tolerance(["cocostuff27=1.0,cocostuff27:cluster.acc=0.8", "checkpoint=0.25", "sigma=3"])
    assert tol.points("checkpoint", "cocostuff27", "cluster.acc") == 0.8
    assert tol.points("checkpoint", "potsdam3", "cluster.acc") == 0.25
    assert tol.limit("retrain", "potsdam3", "cluster.acc", std=1.0, n=2) == 3.0
    assert check([50.8], steps=0, tol=parse_tolerance(["cocostuff27=1.0"])).exit_code == 0
    assert check([50.8], steps=0).exit_code == 1
    for bad in ("retrain", "retrain=x", "=1", "sigma=-1"):
        with pytest.raises(ToleranceError, match="bad --tolerance entry"):
            parse_tolerance([bad])


@pytest.mark.parametrize("spec", [dict(backbone="vit-b8"), dict(protocol="stego"), dict(dataset="potsdam3"),
                                  dict(preset="tps")])
def test_only_like_is_compared_with_like(spec):
    result = check([10.0], **spec)  # would fail by 40 points if it were compared
    assert len(result.compared) == 0 and result.exit_code == 0
    assert result.skipped["no reproduced runs"] == 1


def test_crf_on_and_off_are_never_mixed():
    no_crf = [make_record("a", metrics={"cluster": {"acc": 10.0}})]
    agg = aggregate(records_frame(no_crf))
    assert len(against_reported(reported_frame([reported_row()]), agg, Tolerance()).compared) == 0
    off = against_reported(reported_frame([reported_row(crf="false", value=10.4)]), agg, Tolerance())
    assert off.compared.iloc[0]["delta"] == pytest.approx(-0.4)
    unknown = against_reported(reported_frame([reported_row(crf="unknown", value=10.0)]), agg, Tolerance())
    assert len(unknown.compared) == 0 and unknown.skipped["crf not stated"] == 1


def test_check_command_exit_codes(tmp_path, capsys):
    reported = write_reported_csv(tmp_path / "rep", [reported_row(value=50.0)])
    good = write_records(tmp_path / "good", runs([51.0, 52.0]))          # mean 51.5, std .71 -> ±2
    bad = write_records(tmp_path / "bad", runs([53.0, 53.2]))            # mean 53.1 -> +3.1
    assert main(["check", "--results", str(good), "--reported", str(reported)]) == 0
    out = capsys.readouterr().out
    assert "+1.50" in out and "1 value(s) compared, 0 outside tolerance" in out
    assert main(["check", "--results", str(bad), "--reported", str(reported)]) == 1
    assert "+3.10" in capsys.readouterr().out
    assert main(["check", "--results", str(bad), "--reported", str(reported), "--tolerance", "retrain=3.1"]) == 0
    assert main(["check", "--results", str(bad), "--reported", str(reported), "--class", "checkpoint",
                 "--tolerance", "checkpoint=3.0"]) == 1
    assert main(["check", "--results", str(bad), "--tolerance", "oops"]) == 2
    assert main(["check", "--results", str(tmp_path / "missing")]) == 2


def test_check_against_a_saved_results_file(tmp_path, capsys):
    old = write_records(tmp_path / "old", runs([50.0, 50.4], steps=0))
    saved = export_records(old, tmp_path / "old.csv", "csv")
    assert main(["check", "--results", str(old), "--against", str(saved)]) == 0
    new = write_records(tmp_path / "new", runs([50.9, 50.9], steps=0))   # +0.7 against mean 50.2
    assert main(["check", "--results", str(new), "--against", str(saved)]) == 1
    assert "+0.70" in capsys.readouterr().out
    assert main(["check", "--results", str(new), "--against", str(old), "--tolerance", "checkpoint=0.7"]) == 0


def test_against_baseline_reports_unmatched_keys():
    cur = aggregate_like(records_frame(runs([50.0])))
    base = aggregate_like(records_frame(runs([50.0], backbone="vit-s16")))
    result = against_baseline(cur, base, Tolerance())
    assert len(result.compared) == 0
    assert result.skipped == {"only in baseline": 1, "only in current": 1}


def test_random_init_runs_compare_with_a_baseline_but_never_with_papers():
    smoke = aggregate(records_frame(runs([50.0], random_init=True)))
    assert len(against_reported(reported_frame([reported_row(value=50.0)]), smoke, Tolerance()).compared) == 0
    smoke = aggregate_like(records_frame(runs([50.0], random_init=True)))
    result = against_baseline(smoke, aggregate_like(records_frame(runs([53.0], random_init=True))), Tolerance())
    assert result.compared.iloc[0]["backbone"] == "vit-s8 (random init)" and result.exit_code == 1


# ---------------------------------------------------------------- like for like against a saved baseline


def with_overrides(records, **overrides):
    for record in records:
        record["spec"]["overrides"] = dict(overrides)
    return records


def baseline_check(cur_records, base_records, tol=None):
    return against_baseline(aggregate_like(records_frame(cur_records)), aggregate_like(records_frame(base_records)),
                            tol or Tolerance())


def test_runs_differing_in_overrides_are_listed_never_compared():
    # the issue's case: 4 steps against 40 steps would have "passed" or "failed" as if equal
    cur = with_overrides(runs([10.0]), **{"train.steps": 4})
    base = with_overrides(runs([50.0]), **{"train.steps": 40})
    result = baseline_check(cur, base)
    assert len(result.compared) == 0 and result.exit_code == 0
    (unlike,) = result.unlike.itertuples(index=False)
    assert unlike.reason == "different --set overrides"
    assert (unlike.current_overrides, unlike.baseline_overrides) == ('{"train.steps":4}', '{"train.steps":40}')
    assert result.skipped == {"only in baseline": 0, "only in current": 0, "unlike runs (listed)": 1}
    text = format_result(result, "baseline")
    assert 'not compared, unlike: hp vit-s8 cocostuff27 ppap: different --set overrides' in text
    assert '{"train.steps":4}' in text and '{"train.steps":40}' in text


def test_equal_overrides_are_compared():
    cur = with_overrides(runs([47.0]), **{"train.steps": 40})
    base = with_overrides(runs([50.0]), **{"train.steps": 40})
    result = baseline_check(cur, base)
    assert result.compared.iloc[0]["delta"] == pytest.approx(-3.0) and result.exit_code == 1
    assert len(result.unlike) == 0


def test_runs_over_different_seeds_are_listed_never_compared():
    result = baseline_check(runs([50.0]), runs([50.0, 60.0, 70.0]))  # seed 0 against seeds 0,1,2
    assert len(result.compared) == 0
    (unlike,) = result.unlike.itertuples(index=False)
    assert (unlike.current_seeds, unlike.baseline_seeds, unlike.reason) == ("0", "0,1,2", "different seeds")


@pytest.mark.parametrize("spec", [dict(backbone="vit-b8"), dict(protocol="stego"), dict(preset="smoke"),
                                  dict(dataset="potsdam3"), dict(method="stego")])
def test_baseline_compares_only_like_with_like(spec):
    result = baseline_check(runs([10.0], **spec), runs([50.0]))  # 40 points apart if compared
    assert len(result.compared) == 0 and result.exit_code == 0
    assert result.skipped == {"only in baseline": 1, "only in current": 1}


def test_baseline_never_mixes_crf_on_and_off():
    cur = [make_record("a", metrics={"cluster": {"acc": 10.0}})]
    base = [make_record("a", metrics={"cluster_crf": {"acc": 50.0}})]
    result = baseline_check(cur, base)
    assert len(result.compared) == 0 and result.skipped == {"only in baseline": 1, "only in current": 1}


def test_an_export_without_overrides_is_unlike_everything(tmp_path):
    old = write_records(tmp_path / "old", runs([50.0]))
    saved = export_records(old, tmp_path / "old.csv", "csv")
    frame = pd.read_csv(saved).drop(columns=["overrides"])  # as written before overrides were exported
    frame.to_csv(saved, index=False)
    result = against_baseline(aggregate_like(records_frame(runs([50.0]))), aggregate_like(read_export(saved)),
                              Tolerance())
    assert len(result.compared) == 0
    assert result.unlike.iloc[0]["reason"].startswith("overrides not recorded")


def test_check_command_lists_unlike_runs(tmp_path, capsys):
    old = write_records(tmp_path / "old", with_overrides(runs([50.0]), **{"train.steps": 40}))
    new = write_records(tmp_path / "new", with_overrides(runs([10.0]), **{"train.steps": 4}))
    assert main(["check", "--results", str(new), "--against", str(old)]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    assert "0 value(s) compared" in captured.out and "1 unlike runs (listed)" in captured.out
    assert "not compared, unlike: hp vit-s8 cocostuff27 ppap: different --set overrides" in captured.out
    saved = export_records(old, tmp_path / "old.csv", "csv")  # the same through an exported file
    assert main(["check", "--results", str(new), "--against", str(saved)]) == 0
    assert "different --set overrides" in capsys.readouterr().out


def test_runs_with_overrides_are_never_compared_with_papers(tmp_path, capsys):
    reported = write_reported_csv(tmp_path / "rep", [reported_row(value=50.0)])
    results = write_records(tmp_path / "res", runs([50.0]) + with_overrides(
        [make_record("x", seed=5, metrics={"cluster_crf": {"acc": 10.0}})], **{"train.steps": 4}))
    assert main(["check", "--results", str(results), "--reported", str(reported)]) == 0
    out = capsys.readouterr().out
    assert "(n=1)" in out and "+0.00" in out  # the 10.0 of the 4-step run did not enter the mean
    assert "1 runs with --set overrides" in out
