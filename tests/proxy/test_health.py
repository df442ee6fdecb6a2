"""Health state machine with injected time: passive max_fails/fail_timeout, active fall/rise."""

from __future__ import annotations

from proxy.health import EventLog, UpstreamHealth


def make(**overrides: float) -> tuple[UpstreamHealth, EventLog]:
    log = EventLog()
    options = {"max_fails": 2, "fail_timeout": 10.0, "fall": 3, "rise": 2}
    options.update(overrides)
    return UpstreamHealth("app1", log=log, **options), log  # type: ignore[arg-type]


def test_passive_failures_within_fail_timeout_take_it_out_for_fail_timeout() -> None:
    health, log = make()
    health.record_failure(100.0, "connection refused")
    assert health.available(100.0)
    health.record_failure(105.0, "connection refused")
    assert not health.available(105.0)
    assert not health.available(114.9)
    assert health.available(115.0)
    assert [(e.change, e.at, e.reason) for e in log] == [
        ("DOWN", 105.0, "connection refused"),
        ("UP", 115.0, "fail_timeout expired"),
    ]


def test_failures_further_apart_than_fail_timeout_do_not_add_up() -> None:
    health, _ = make()
    health.record_failure(100.0, "reset")
    health.record_failure(111.0, "reset")
    assert health.available(111.0)


def test_success_clears_passive_failures() -> None:
    health, _ = make()
    health.record_failure(100.0, "reset")
    health.record_success(101.0)
    health.record_failure(102.0, "reset")
    assert health.available(102.0)


def test_max_fails_zero_disables_passive_checks() -> None:
    health, _ = make(max_fails=0)
    for second in range(5):
        health.record_failure(float(second), "reset")
    assert health.available(5.0)


def test_active_checks_fall_and_rise() -> None:
    health, log = make()
    for second in (1.0, 2.0):
        health.record_check(second, False, "connection refused")
        assert health.available(second)
    health.record_check(3.0, False, "connection refused")
    assert not health.available(3.0)
    assert health.reason == "health check: connection refused"
    health.record_check(4.0, True)
    assert not health.available(4.0)
    health.record_check(5.0, True)
    assert health.available(5.0)
    texts = [event.describe("T") for event in log]
    assert texts == [
        "app1 DOWN T health check: connection refused",
        "app1 UP T 2 health checks passed",
    ]


def test_active_down_wins_over_expired_passive_timeout() -> None:
    health, _ = make(max_fails=1, fall=1)
    health.record_failure(1.0, "refused")
    health.record_check(1.5, False, "refused")
    assert not health.available(20.0)


def test_passing_checks_after_passive_failures_bring_it_back_before_fail_timeout() -> None:
    # A restarted app server: requests failed, the checker never saw `fall` failures.
    health, log = make(max_fails=1, rise=2)
    health.record_check(99.0, True)
    health.record_check(99.5, True)
    health.record_failure(100.0, "connection refused")
    assert not health.usable and not health.available(100.0)
    health.record_check(101.0, True, started=100.5)
    assert not health.usable  # one pass after the failure: rise is 2
    health.record_check(102.0, True, started=101.5)
    assert health.usable and health.available(102.0) and health.out_until == 0.0
    assert [(e.change, e.at, e.reason) for e in log] == [
        ("DOWN", 100.0, "connection refused"),
        ("UP", 102.0, "2 health checks passed"),
    ]


def test_a_check_started_before_the_failures_does_not_count() -> None:
    health, _ = make(max_fails=1, rise=1)
    health.record_failure(100.0, "connection refused")
    health.record_check(100.2, True, started=99.9)
    assert not health.usable
    health.record_check(101.0, True, started=100.5)
    assert health.usable


def test_a_failed_check_restarts_the_count_of_passes() -> None:
    health, _ = make(max_fails=1, fall=3, rise=2)
    health.record_failure(100.0, "reset")
    health.record_check(101.0, True)
    health.record_check(102.0, False, "timed out")
    health.record_check(103.0, True)
    assert not health.usable
    health.record_check(104.0, True)
    assert health.usable


def test_usable_flag_follows_every_transition_and_the_tick_ends_the_out_time() -> None:
    health, _ = make(max_fails=1, fall=1, rise=1)
    assert health.usable and health.fallback_until == 0.0
    health.record_failure(100.0, "reset")
    assert not health.usable and health.out_until == 110.0 and health.fallback_until == 110.0
    health.tick(109.9)
    assert not health.usable
    health.tick(110.0)
    assert health.usable and health.out_until == 0.0
    health.record_check(111.0, False, "refused")
    assert not health.usable and health.fallback_until == 0.0
    health.record_failure(111.5, "refused")
    assert health.fallback_until == 0.0  # actively down: never a fallback
    health.record_check(112.0, True)
    assert health.usable and health.out_until == 0.0
    health.hold(113.0, "draining", "gone")
    assert not health.usable
    health.hold(114.0, None)
    assert health.usable


def test_a_new_address_is_not_usable_until_admitted() -> None:
    log = EventLog()
    health = UpstreamHealth(
        "10.0.0.1:8000", log=log, max_fails=1, fail_timeout=10, fall=1, rise=2, admitted=False
    )
    assert not health.usable and health.fallback_until == 0.0
    health.record_check(1.0, True)
    assert health.usable
