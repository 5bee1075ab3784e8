"""The operator API's parameters as pure functions (issue 13): the queue's cursor, times, filters and
an action's body, over their input spaces."""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import MultiDict

from ecallgw.gateway.operator_api import (
    _action_of,
    _BadParameterError,
    _cursor,
    _query,
    _time,
    _uncursor,
)
from ecallgw.gateway.records import OPERATOR_ACTIONS

keys = st.tuples(
    st.integers(0, 1),
    st.integers(0, 3),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(min_size=1, max_size=80),
)


@given(keys)
def test_a_cursor_gives_back_its_key(key: tuple[int, int, float, str]) -> None:
    text = _cursor(key)
    assert set(text) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert _uncursor(text) == key


@given(
    st.one_of(
        st.text(max_size=60), st.binary(max_size=60).map(lambda b: base64.urlsafe_b64encode(b).decode())
    )
)
def test_any_other_cursor_is_refused_by_name(text: str) -> None:
    try:
        key = _uncursor(text)
    except _BadParameterError as exc:
        assert str(exc).startswith("cursor")
    else:  # the rare text that is a key's encoding
        assert _cursor(key) == text.rstrip("=")


@given(
    st.datetimes(
        timezones=st.timezones(), min_value=dt.datetime(1971, 1, 1), max_value=dt.datetime(2200, 1, 1)
    )
)
def test_since_as_iso_8601_is_the_same_instant_as_epoch_seconds(when: dt.datetime) -> None:
    assert _time(when.isoformat(), "since") == pytest.approx(when.timestamp(), abs=1e-6)
    assert _time(repr(when.timestamp()), "since") == when.timestamp()


def test_a_time_without_an_offset_is_utc_and_nonsense_is_refused() -> None:
    assert _time("2026-12-05T03:00:00", "until") == dt.datetime(2026, 12, 5, 3, tzinfo=dt.UTC).timestamp()
    assert _time("2026-12-05T03:00:00Z", "until") == dt.datetime(2026, 12, 5, 3, tzinfo=dt.UTC).timestamp()
    for bad in ("", "tomorrow", "inf", "nan", "2026-13-01"):
        with pytest.raises(_BadParameterError, match=r"^until"):
            _time(bad, "until")


def q(**params: Any) -> MultiDict[str]:
    out: MultiDict[str] = MultiDict()
    for k, v in params.items():
        for item in v if isinstance(v, list) else [v]:
            out.add(k, str(item))
    return out


@given(
    st.lists(st.lists(st.sampled_from(["open", "updated", "cancelled", "resolved"]), min_size=1), max_size=3)
)
def test_status_is_repeatable_or_a_comma_list(groups: list[list[str]]) -> None:
    query = _query(q(status=[",".join(g) for g in groups]), ("operator",))
    assert list(query.statuses) == list(dict.fromkeys(s for g in groups for s in g))


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"limit": 1001}, "limit"),
        ({"limit": -1}, "limit"),
        ({"status": "open,closed"}, "status"),
        ({"level": ["high", "urgent"]}, "level"),
        ({"kind": "robot"}, "kind"),
        ({"tps": ["a", "b"]}, "tps"),
        ({"vehicle": "x" * 65}, "vehicle"),
        ({"q": "x" * 201}, "q"),
        ({"order": "age"}, "'order'"),
    ],
)
def test_a_bad_filter_is_named(params: dict[str, Any], name: str) -> None:
    with pytest.raises(_BadParameterError) as info:
        _query(q(**params), ("operator",))
    message = str(info.value)
    assert message.startswith(name) or name in message
    assert "\n" not in message


@given(
    action=st.sampled_from(OPERATOR_ACTIONS),
    note=st.one_of(st.none(), st.text(max_size=30)),
    reason=st.one_of(st.none(), st.text(max_size=30)),
    assignee=st.one_of(st.none(), st.from_regex(r"[A-Za-z0-9_.@-]{1,10}", fullmatch=True)),
)
def test_an_action_body_is_accepted_only_with_what_it_needs(
    action: str, note: str | None, reason: str | None, assignee: str | None
) -> None:
    body: dict[str, Any] = {"action": action, "note": note}
    if reason is not None:
        body["reason"] = reason
    if assignee is not None:
        body["assignee"] = assignee
    has_note = bool((note or "").strip())
    has_reason = bool((reason or "").strip()) and not any(c in (reason or "") for c in "\r\n")
    try:
        journaled, kept = _action_of(body)
    except _BadParameterError as exc:
        message = str(exc)
        assert (
            (action == "note" and not has_note and message.startswith("note"))
            or (action == "cancel" and (not has_reason or not has_note))
            or (assignee is not None and action != "claim" and "assignee" in message)
        ), message
        return
    assert kept == (note or "").strip()
    assert journaled.partition(":")[0] == action
    if action == "cancel":
        assert has_note and has_reason and journaled == f"cancel:{reason.strip()}"  # type: ignore[union-attr]
    if action == "claim" and assignee is not None:
        assert journaled == f"claim:{assignee}"
    if action == "note":
        assert has_note
