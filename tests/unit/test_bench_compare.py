"""scripts/bench/compare.py: the pure parts (reading figures, medians, ratio orientation, the table)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from scripts.bench import compare
from scripts.bench.compare import (
    FIGURES,
    FULL,
    Combined,
    Figure,
    SideRun,
    combine,
    extract_farm_dispatch,
    extract_farm_notifications,
    extract_farm_offers,
    extract_farm_rides,
    extract_twin_create,
    extract_twin_e2e,
    extract_twin_steps,
    parse_twin_results,
    ratio,
    read_records,
    redis_db_of,
    redis_url_with_db,
    render_table,
    table_rows,
    twin_result,
)
from scripts.bench.harness import RESULTS_ENV, record_result


def phase(kind: str, worker: bool, *, rate: float, p99: float = 10.0, errors: int = 0, unanswered: int = 0,
          probe: bool = False) -> dict[str, object]:
    return {"label": "x", "kind": kind, "worker": worker, "probe": probe, "rate": rate, "p99_ms": p99,
            "p50_ms": 1.0, "errors": errors, "unanswered": unanswered}


# --- ratio and medians ---------------------------------------------------------------------------
def test_ratio_is_above_one_when_the_farm_is_better() -> None:
    assert ratio(2_000, 1_000, higher_is_better=True) == 2.0  # the farm does twice the rides/s
    assert ratio(10.0, 40.0, higher_is_better=False) == 4.0  # the farm's latency is a quarter
    assert ratio(500, 1_000, higher_is_better=True) == 0.5
    assert ratio(80.0, 40.0, higher_is_better=False) == 0.5


@pytest.mark.parametrize(("farm", "twin"), [(None, 1.0), (1.0, None), (0.0, 1.0), (1.0, 0.0),
                                            (math.nan, 1.0)])
def test_no_ratio_without_two_measured_figures(farm: float | None, twin: float | None) -> None:
    assert ratio(farm, twin, higher_is_better=True) is None


def test_combine_takes_medians_and_counts_the_runs_that_measured() -> None:
    runs = [SideRun(values={"a": 1.0, "b": 5.0}), SideRun(values={"a": 9.0}), SideRun(values={"a": 3.0})]
    runs[1].flags["a"] = "12 errors"
    combined = combine(runs)
    assert combined.values == {"a": 3.0, "b": 5.0}
    assert combined.counts == {"a": 3, "b": 1}
    assert combined.flags == {"a": "run 2: 12 errors"}


def test_combine_of_an_even_number_of_runs_averages_the_middle_two() -> None:
    assert combine([SideRun(values={"a": v}) for v in (4.0, 1.0, 3.0, 2.0)]).values["a"] == 2.5


def test_side_run_add_keeps_the_bench_note_on_each_figure() -> None:
    side = SideRun()
    side.add(({"x": 1.0, "y": 2.0}, {"x": "3 errors"}), note="bench exited 1")
    assert side.flags == {"x": "3 errors; bench exited 1", "y": "bench exited 1"}
    clean = SideRun()
    clean.add(({"x": 1.0}, {}))
    assert clean.flags == {}


# --- the table -------------------------------------------------------------------------------------
def test_table_orients_every_ratio_and_marks_what_was_not_measured() -> None:
    figures = [Figure("rate", "g", "rides at {paced_rate:,.0f}/s", "/s", True),
               Figure("lat", "g", "latency at {offer_rate:g}/s", "ms", False, "≤ 30 ms"),
               Figure("farm_only", "g", "notifications", "/s", True, twin=False),
               Figure("rate_probe", "g", "rides, probe twin", "/s", True, farm_key="rate"),
               Figure("gone", "g", "never measured", "/s", True)]
    farm = Combined({"rate": 3_000.0, "lat": 10.0, "farm_only": 450.0}, {"lat": "2 errors"},
                    {"rate": 1, "lat": 1, "farm_only": 1})
    twin = Combined({"rate": 1_500.0, "lat": 20.0, "farm_only": 1.0, "rate_probe": 3_000.0}, {},
                    {"rate": 1, "lat": 1, "farm_only": 1, "rate_probe": 1})
    rows, notes = table_rows(figures, FULL, farm, twin, runs=1)
    by_label = {row.label: row for row in rows}
    assert by_label["rides at 1,000/s"].farm == "3,000/s"
    assert by_label["rides at 1,000/s"].ratio == "2.00x"
    assert by_label["latency at 200/s"].farm == "10.0 ms !"
    assert by_label["latency at 200/s"].ratio == "2.00x"  # half the twin's latency: the farm is better
    assert by_label["latency at 200/s"].target == "≤ 30 ms"
    assert by_label["notifications"].twin == "—"  # the twin has none, whatever it reported
    assert by_label["notifications"].ratio == "—"
    assert by_label["rides, probe twin"].farm == "3,000/s"  # the farm figure shown against a twin variant
    assert by_label["rides, probe twin"].ratio == "1.00x"
    assert (by_label["never measured"].farm, by_label["never measured"].twin) == ("—", "—")
    assert notes == ["farm, latency at 200/s: 2 errors"]


def test_table_shows_a_figure_measured_in_fewer_runs() -> None:
    figure = Figure("rate", "g", "rides", "/s", True)
    rows, _ = table_rows([figure], FULL, Combined({"rate": 10.0}, {}, {"rate": 2}), None, runs=3)
    assert rows[0].farm == "10/s (2/3)"
    assert rows[0].twin == "—"


def test_rendered_table_has_one_line_per_figure_and_aligned_columns() -> None:
    rows, _ = table_rows(FIGURES, FULL, None, None, runs=1)
    text = render_table(rows).splitlines()
    assert text[0].split() == ["figure", "target", "farm", "twin", "ratio"]
    assert len(text) == len(FIGURES) + 2
    assert len({len(line) for line in text}) == 1


def test_values_are_formatted_by_unit() -> None:
    assert compare.fmt_value(3186.4, "/s") == "3,186/s"
    assert compare.fmt_value(4.34, "ms") == "4.3 ms"
    assert compare.fmt_value(12_500.0, "ms") == "12.5 s"
    assert compare.fmt_value(120.4, "MB") == "120 MB"


# --- the farm benches' JSON lines -------------------------------------------------------------------
def test_record_result_appends_json_lines_only_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    from dataclasses import dataclass

    @dataclass
    class Drain:
        rate_first_last: float

    path = tmp_path / "results.jsonl"
    monkeypatch.delenv(RESULTS_ENV, raising=False)
    record_result("dispatch", {"drain": Drain(1.0)})
    assert not path.exists()
    monkeypatch.setenv(RESULTS_ENV, str(path))
    record_result("dispatch", {"steps": 10, "drain": Drain(812.5)})
    record_result("other", {"x": 1})
    assert read_records(path, "dispatch") == [{"steps": 10, "drain": {"rate_first_last": 812.5}}]
    assert len(path.read_text().splitlines()) == 2
    assert read_records(tmp_path / "missing.jsonl", "dispatch") == []


def test_farm_rides_phases_map_to_figures() -> None:
    figures = {"rate": 1000.0, "phases": [
        phase("paced", True, rate=990.0, p99=42.0),
        phase("wrk", True, rate=1_234.0),
        phase("paced", False, rate=1_000.0, p99=5.0),  # no figure: web-only paced is not compared
        phase("wrk", False, rate=2_500.0, errors=3),
        phase("wrk", False, rate=9_999.0, probe=True),  # the Redis-share runs are not compared
    ]}
    values, flags = extract_farm_rides(figures)
    assert values == {"rides_paced_p99": 42.0, "rides_worker": 1_234.0, "rides_web": 2_500.0}
    assert flags == {"rides_web": "3 errors"}


def test_farm_paced_run_that_fell_behind_is_flagged() -> None:
    figures = {"rate": 1000.0, "phases": [phase("paced", True, rate=184.0, p99=8_862.0, unanswered=5)]}
    values, flags = extract_farm_rides(figures)
    assert values == {"rides_paced_p99": 8_862.0}
    assert flags["rides_paced_p99"] == "5 unanswered (p99 of the answered ones); reached 184/s of 1,000/s"


def test_farm_offer_latency_and_rss() -> None:
    figures = {"rate": 200.0, "offer_ms": {"p50": 4.0, "p90": 8.0, "p95": 12.0, "p99": 30.0, "max": 90.0},
               "problems": 0, "web": 40.0, "worker": 30.0, "box": 60.0, "web_rss": 150.5, "worker_rss": 210.0}
    assert extract_farm_offers(figures, slow=False) == (
        {"offer_p50": 4.0, "offer_p95": 12.0, "offer_p99": 30.0, "rss_web": 150.5, "rss_worker": 210.0}, {})
    values, flags = extract_farm_offers({**figures, "problems": 2}, slow=True)
    assert values == {"offer_slow_p50": 4.0}
    assert flags == {"offer_slow_p50": "2 rides failed or got no offer"}


def test_farm_dispatch_and_notifications() -> None:
    drain = {"rate_first_last": 640.0, "rate_middle": 700.0, "done": 5000, "failed_jobs": 0,
             "timed_out": False}
    assert extract_farm_dispatch({"steps": 5000, "drain": drain}) == ({"steps": 640.0}, {})
    _, flags = extract_farm_dispatch({"steps": 5000, "drain": {**drain, "done": 100, "timed_out": True}})
    assert flags == {"steps": "drain timed out (100 of 5,000 steps)"}
    runs = [{"run": {"latency_ms": 0, "threads": 8, "processes": 1}, "rate": 410.0, "failed": 0},
            {"run": {"latency_ms": 100, "threads": 64, "processes": 1}, "rate": 230.0, "failed": 1},
            {"run": {"latency_ms": 0, "threads": 8, "processes": 2}, "rate": 800.0, "failed": 0}]
    values, flags = extract_farm_notifications({"messages": 6000, "runs": runs})
    assert values == {"notify_0_8": 410.0, "notify_100_64": 230.0}
    assert flags == {"notify_100_64": "1 failed"}


def test_a_renamed_field_is_a_lookup_error_not_a_wrong_figure() -> None:
    with pytest.raises(KeyError):
        extract_farm_dispatch({"steps": 10, "drain": {"rate": 1.0}})


# --- the twin's RESULT lines ---------------------------------------------------------------------------
TWIN_OUTPUT = "\n".join([
    "Running 10s test @ http://127.0.0.1:3100",
    'RESULT {"bench":"create_rides","rps":3186.2,"requests":31862,"non2xx":0,"socketErrors":0,'
    '"p50ms":19.1,"p90ms":30.2,"p99ms":52.0,"maxms":80.1}',
    'RESULT {"bench":"e2e_latency","rides":2000,"created":2000,"offered":1998,"rateAchieved":199.8,'
    '"p50ms":4.3,"p95ms":15.6,"p99ms":28.1,"maxms":60.0,"httpP50ms":2.0,"httpP99ms":9.0}',
    'RESULT {"bench":"step_throughput","steps":5000,"secs":20.2,"stepsPerSec":247.5,"ridesWithOffers":5000,'
    '"offers":100000,"left":0}',
    "RESULTS are not this line",
])


def test_twin_result_lines_are_parsed_by_bench() -> None:
    assert [r["bench"] for r in parse_twin_results(TWIN_OUTPUT)] == ["create_rides", "e2e_latency",
                                                                      "step_throughput"]
    created = extract_twin_create(twin_result(TWIN_OUTPUT, "create_rides"), "rides_web")
    assert created == ({"rides_web": 3186.2}, {})
    values, flags = extract_twin_e2e(twin_result(TWIN_OUTPUT, "e2e_latency"), slow=False)
    assert values == {"offer_p50": 4.3, "offer_p95": 15.6, "offer_p99": 28.1}
    assert flags["offer_p95"] == "2 rides failed or got no offer"
    assert extract_twin_steps(twin_result(TWIN_OUTPUT, "step_throughput"), "steps_probe") == (
        {"steps_probe": 247.5}, {})
    with pytest.raises(LookupError):
        twin_result("no results here", "create_rides")


def test_twin_errors_and_left_steps_are_flagged() -> None:
    result = json.loads(TWIN_OUTPUT.splitlines()[1].removeprefix("RESULT "))
    assert extract_twin_create({**result, "non2xx": 7, "socketErrors": 1}, "k")[1] == {"k": "8 errors"}
    left = extract_twin_steps({"stepsPerSec": 10.0, "left": 3}, "k")[1]
    assert left == {"k": "3 steps left at the time limit"}


# --- the twin's Redis DB index ----------------------------------------------------------------------------
def test_redis_url_points_at_the_twins_own_index() -> None:
    assert redis_url_with_db("redis://127.0.0.1:6379/0", 15) == "redis://127.0.0.1:6379/15"
    assert redis_url_with_db("redis://:pw@host:6380", 3) == "redis://:pw@host:6380/3"
    assert redis_db_of("redis://127.0.0.1:6379/4") == 4
    assert redis_db_of("redis://127.0.0.1:6379") == 0


# --- options ------------------------------------------------------------------------------------------------
def test_skip_takes_figure_groups_and_farm_benches_follow_it() -> None:
    args = compare.parse_args(["--skip", "notifications,rss", "--skip", "offer-5", "--only", "farm"])
    assert args.skip == {"notifications", "rss", "offer-5"}
    names = [b.name for b in compare.farm_benches(FULL, args.skip)]
    assert names == ["bench_rides.py", "bench_offer_latency.py at 200/s", "bench_dispatch.py"]
    rides = compare.farm_benches(FULL, {"rides-web"})[0]
    assert "--skip-no-worker" in rides.args and "--drivers" in rides.args
    with pytest.raises(SystemExit):
        compare.parse_args(["--skip", "nonsense"])


def test_busy_runs_names_the_runs_that_shared_the_machine() -> None:
    quiet, busy = SideRun(background=[3.0, 8.0]), SideRun(background=[2.0, 61.0])
    named = compare.busy_runs({"farm": [quiet], "twin": [quiet, busy]})
    assert named == ["twin run 2: up to 61 % of the CPUs"]
    assert compare.busy_runs({"farm": [SideRun()]}) == []
