"""The Session mapping: change tracking, set-time refusal, roll-back (pure)."""

from __future__ import annotations

import pytest

from sessionstore import Session, UnstorableValueError
from sessionstore.codec import transcoder_named
from sessionstore.ids import new_session_id


def fresh() -> Session:
    return Session(sid=new_session_id("n1", "app1"), transcoder=transcoder_named("json"),
                   created=100.0, last_accessed=100.0, max_inactive_interval=1800.0, new=True)


def stored(session: Session) -> None:
    session.mark_stored(session.encode())


def test_changed_follows_the_digest_of_the_attributes() -> None:
    session = fresh()
    session["a"] = 1
    assert session.changed
    stored(session)
    assert not session.changed
    session["a"] = 1  # same value: same digest
    assert not session.changed
    session["a"] = 2
    assert session.changed
    stored(session)
    del session["a"]
    assert session.changed


def test_in_place_changes_of_lists_and_dicts_are_seen() -> None:
    session = fresh()
    session["items"] = []
    stored(session)
    assert session.get("missing") is None and not session.changed
    items = session["items"]
    assert isinstance(items, list)
    items.append("x")
    assert session.changed


def test_reading_scalars_costs_no_encoding() -> None:
    session = fresh()
    session["name"] = "value"
    stored(session)
    assert session["name"] == "value" and "name" in session and len(session) == 1
    assert not session.may_have_changed()


def test_unstorable_value_is_refused_and_the_session_unchanged() -> None:
    session = fresh()
    session["ok"] = "yes"
    with pytest.raises(UnstorableValueError, match="session attribute 'bad'"):
        session["bad"] = {"when": {1, 2}}  # type: ignore[dict-item]
    assert dict(session) == {"ok": "yes"}


def test_roll_back_restores_the_stored_state() -> None:
    session = fresh()
    session["a"] = "stored"
    stored(session)
    session["a"] = "too big"
    session["b"] = "new"
    session.roll_back()
    assert dict(session) == {"a": "stored"} and not session.changed


def test_invalidate_and_metadata() -> None:
    session = fresh()
    session["a"] = 1
    assert session.new and session.created == 100.0 and session.max_inactive_interval == 1800
    assert session.id.endswith("-n1.app1")
    session.invalidate()
    assert session.invalidated and len(session) == 0
