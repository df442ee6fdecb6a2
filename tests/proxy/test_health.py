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
