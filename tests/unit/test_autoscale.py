"""The autoscaler's policy (pure: load and clock in, decision out) and its settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.settings import AutoscaleSettings, SettingsError, load_settings
from workers.autoscale import parse_arguments, worker_command
from workers.scale_policy import Load, ScalePolicy

SCALE = AutoscaleSettings(min_workers=1, max_workers=3, interval_s=1, target_age_s=10, target_depth=100,
                          cooldown_s=60)


def policy() -> ScalePolicy:
    return ScalePolicy(SCALE, threads=8)


def load(workers: int, ready: int = 0, in_flight: int = 0, age: float = 0.0) -> Load:
    return Load(workers=workers, ready=ready, in_flight=in_flight, oldest_ready_age_s=age)


def test_an_old_message_or_a_deep_queue_adds_a_worker_up_to_the_maximum() -> None:
    scaler = policy()
    assert scaler.decide(load(1, ready=5, age=11), now=0).action == "add"
    assert scaler.decide(load(2, ready=201, age=1), now=0).reason == "ready_per_worker"
    assert scaler.decide(load(2, ready=300, age=30), now=0).reason == "oldest_ready_age+ready_per_worker"
    assert scaler.decide(load(3, ready=900, age=30), now=0).reason == "at_maximum"
    assert scaler.decide(load(0), now=0).reason == "below_minimum"


def test_a_worker_is_removed_only_after_a_full_cool_down_of_idleness_each_time() -> None:
    scaler = policy()
    # idle: nothing ready, and what is in flight fits in half the threads of one worker fewer
    assert scaler.decide(load(3, in_flight=8), now=0).reason == "cooling_down"
    assert scaler.decide(load(3, in_flight=8), now=59).action == "hold"
    assert scaler.decide(load(3, in_flight=8), now=60).action == "remove"
    assert scaler.decide(load(2), now=61).reason == "cooling_down"
    assert scaler.decide(load(2), now=120).action == "remove"
    assert scaler.decide(load(1), now=500).reason == "at_minimum"


def test_work_resets_the_cool_down() -> None:
    scaler = policy()
    scaler.decide(load(2), now=0)
    assert scaler.decide(load(2, ready=1), now=30).reason == "busy"
    assert scaler.decide(load(2, in_flight=5), now=40).reason == "busy"  # 5 > (2 - 1) * 8 / 2
    assert scaler.decide(load(2), now=70).reason == "cooling_down"
    assert scaler.decide(load(2), now=130).action == "remove"


def test_workers_get_the_autoscalers_arguments_with_modules_where_dramatiq_takes_them() -> None:
    settings = load_settings(environ={"WORKER_PROCESSES": "4"}, env_file=Path("/nonexistent"))
    args = parse_arguments(["tests.e2e.probe_jobs", "--queues", "probe", "dispatch"])
    assert args.queues == ("probe", "dispatch")
    argv, env = worker_command(settings, args.worker_args, "/tmp/metrics")
    assert argv[1:3] == ["workers.entry:setup", "tests.e2e.probe_jobs"]
    assert argv[argv.index("--processes") + 1] == "1" and argv[-3:] == ["--queues", "probe", "dispatch"]
    assert (env["WORKER_PROCESSES"], env["WORKER_METRICS_PORT"], env["WORKER_METRICS_DIR"]) == (
        "1", "0", "/tmp/metrics")


@pytest.mark.parametrize("environ", [{"AUTOSCALE_MIN": "3", "AUTOSCALE_MAX": "2"}, {"AUTOSCALE_MIN": "0"},
                                     {"AUTOSCALE_COOLDOWN_S": "0"}])
def test_impossible_bounds_are_refused(environ: dict[str, str]) -> None:
    with pytest.raises(SettingsError):
        load_settings(environ=environ, env_file=Path("/nonexistent"))
