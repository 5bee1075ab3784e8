"""The calls of an incident in documents (issue 12): one consistent primary call, every call listed."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings

from ecallgw.codecs.document import parse_cap, parse_json_document, render_cap, render_json
from ecallgw.model import IncidentSnapshot
from tests.codecs._snapshot_strategies import snapshots

T0 = 1_764_150_000.0
SENDER = "ecallgw@tps.example"


@settings(max_examples=60, deadline=None)
@given(snapshots())
def test_json_call_block_is_the_primary_call_and_calls_lists_every_call(snap: IncidentSnapshot) -> None:
    doc = parse_json_document(render_json(snap, forwarded_at=T0))  # valid against the shipped schema
    assert [c["call_id"] for c in doc["calls"]] == [c.call_id for c in snap.calls]
    assert [(c["tps"], c["vehicle"], c["callback"], c["lang"]) for c in doc["calls"]] == [
        (c.tps, c.vehicle, c.callback, c.lang) for c in snap.calls
    ]
    if snap.calls:
        primary, block = doc["calls"][0], doc["call"]
        # Every field of the call block from the one primary call: nothing of another call leaks in.
        for key in ("tps", "vehicle", "call_id", "callback", "lang"):
            assert block[key] == primary[key], key


@settings(max_examples=40, deadline=None)
@given(snapshots())
def test_cap_parameters_name_each_call_from_that_call(snap: IncidentSnapshot) -> None:
    if snap.status == "cancelled" and snap.revision == 1:
        snap = replace(snap, status="open")  # a Cancel needs an Alert before it (test_document_cap)
    # Later revisions reference the Alert of revision 1, as the forwarder passes it.
    first = None if snap.revision == 1 else snap.received_at
    alert = parse_cap(render_cap(snap, sender=SENDER, forwarded_at=T0, first_sent_at=first))
    for n, c in enumerate(snap.calls, 1):
        assert alert.parameter(f"call:{n}:tps") == c.tps
        assert alert.parameter(f"call:{n}:vehicle") == c.vehicle
        assert alert.parameter(f"call:{n}:activation") == c.activation
        assert alert.parameter(f"call:{n}:callback") == c.callback
        assert alert.parameter(f"call:{n}:msd_version") == (
            None if c.msd_version is None else str(c.msd_version)
        )
    assert alert.parameter(f"call:{len(snap.calls) + 1}:tps") is None


def test_a_storm_aggregate_has_no_call_and_names_its_members() -> None:
    from tests.codecs.test_document_json import golden_snapshot

    storm = replace(
        golden_snapshot(),
        incident_id="storm-0123456789abcdef01234567",
        vehicle="",
        call_id="",
        msd=None,
        position=None,
        callback=None,
        lang=None,
        members=("inc-1", "inc-2"),
    )
    doc = parse_json_document(render_json(storm, forwarded_at=T0))
    assert doc["call"] is None and doc["members"] == ["inc-1", "inc-2"] and doc["calls"] == []
    assert parse_cap(render_cap(storm, sender=SENDER, forwarded_at=T0)).parameter_values("member") == (
        "inc-1",
        "inc-2",
    )
