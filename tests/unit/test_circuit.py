"""The circuit breaker's states, driven by a hand-set clock."""

from __future__ import annotations

import pytest

from app.adapters.circuit import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from app.errors import CircuitOpen, ProviderError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def down() -> ProviderError:
    return ProviderError("Twilio could not be reached", transient=True, details={"code": "CONNECTION"})


def breaker(clock: Clock) -> CircuitBreaker:
    return CircuitBreaker("twilio", failure_threshold=3, pause_s=10.0, max_pause_s=25.0, clock=clock)


def test_it_opens_after_the_threshold_of_transient_failures_in_a_row() -> None:
    clock = Clock()
    circuit = breaker(clock)
    for _ in range(2):
        circuit.guard()
        circuit.failed(down())
    assert circuit.state == CLOSED
    circuit.guard()
    circuit.failed(down())
    # Then calls are refused at once, saying how long to wait
    assert circuit.state == OPEN
    with pytest.raises(CircuitOpen) as refused:
        circuit.guard()
    assert refused.value.retry_after_s == pytest.approx(10.0)
    assert refused.value.provider == "twilio" and refused.value.transient


def test_a_refusal_about_one_message_does_not_count_and_a_success_resets_the_count() -> None:
    clock = Clock()
    circuit = breaker(clock)
    circuit.failed(down())
    circuit.failed(down())
    circuit.failed(ProviderError("invalid number", transient=False))  # Twilio answered: it is up
    circuit.failed(down())
    circuit.failed(down())
    assert circuit.state == CLOSED


def test_after_the_pause_one_trial_goes_through_and_its_success_closes_it() -> None:
    clock = Clock()
    circuit = breaker(clock)
    for _ in range(3):
        circuit.failed(down())
    clock.now += 10.0
    assert circuit.state == HALF_OPEN
    circuit.guard()  # the trial
    with pytest.raises(CircuitOpen):
        circuit.guard()  # everyone else keeps waiting while it runs
    circuit.succeeded()
    assert circuit.state == CLOSED
    circuit.guard()


def test_a_failed_trial_doubles_the_pause_up_to_its_ceiling() -> None:
    clock = Clock()
    circuit = breaker(clock)
    for _ in range(3):
        circuit.failed(down())
    for expected in (20.0, 25.0, 25.0):
        clock.now += 30.0
        circuit.guard()
        circuit.failed(down())
        with pytest.raises(CircuitOpen) as refused:
            circuit.guard()
        assert refused.value.retry_after_s == pytest.approx(expected)


def test_a_trial_that_ended_in_a_bug_frees_the_trial_slot() -> None:
    clock = Clock()
    circuit = breaker(clock)
    for _ in range(3):
        circuit.failed(down())
    clock.now += 10.0
    with pytest.raises(ZeroDivisionError):
        circuit.call(lambda: 1 / 0)
    assert circuit.call(lambda: "sent") == "sent"
    assert circuit.state == CLOSED
