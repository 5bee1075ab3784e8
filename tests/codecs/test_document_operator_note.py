"""The operator's note in the incident documents (issue 13): any note an operator can write (plain
text, up to 2000 characters, markup and line breaks included) keeps the JSON document valid against
the shipped schema and the CAP message valid against the CAP 1.2 XSD, and reaches both."""

from __future__ import annotations

import json
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from ecallgw.codecs.document import CAP_NAMESPACE, _xml_text, render_cap, render_json
from ecallgw.model import IncidentSnapshot
from tests.codecs._snapshot_strategies import snapshots
from tests.codecs.test_document_cap import SENDER, T0, XSD
from tests.codecs.test_document_json import VALIDATOR

# What an operator types: any text the API accepts (no lone surrogates), markup and CRLF included.
notes = st.text(st.characters(codec="utf-8"), min_size=1, max_size=2000) | st.sampled_from(
    ["<script>alert(1)</script>", "line one\r\nline two", "]]>&amp;"]
)
NS = {"cap": CAP_NAMESPACE}


@settings(max_examples=150)
@given(snapshots(), notes)
def test_a_note_reaches_the_json_document_valid(snapshot: IncidentSnapshot, note: str) -> None:
    doc = json.loads(render_json(replace(snapshot, operator_note=note), forwarded_at=T0))
    assert [e.message for e in VALIDATOR.iter_errors(doc)] == []
    assert doc["operator_note"] == note


@settings(max_examples=150)
@given(snapshots(), notes)
def test_a_note_reaches_the_cap_message_valid(snapshot: IncidentSnapshot, note: str) -> None:
    # A later revision, after the Alert the receiver got (a Cancel needs one to reference).
    later = replace(snapshot, operator_note=note, revision=max(2, snapshot.revision))
    root = etree.fromstring(render_cap(later, sender=SENDER, forwarded_at=T0, first_sent_at=T0 - 60))
    assert XSD.validate(root), str(XSD.error_log)
    # What XML cannot hold is replaced (U+FFFD), and a parser reads CR LF as LF: the rest is the note.
    expected = _xml_text(note).replace("\r\n", "\n").replace("\r", "\n")
    assert (root.findtext("cap:note", namespaces=NS) or "").endswith(f"operator note: {expected}")
    assert f"Operator note: {expected}" in (root.findtext("cap:info/cap:description", namespaces=NS) or "")


def test_no_note_no_operator_text() -> None:
    from tests.codecs.test_document_json import golden_snapshot

    snap = golden_snapshot()
    assert json.loads(render_json(snap, forwarded_at=T0))["operator_note"] is None
    root = etree.fromstring(render_cap(snap, sender=SENDER, forwarded_at=T0))
    assert root.findtext("cap:note", namespaces=NS) is None  # an open incident without a note: no <note>
    assert "Operator note" not in (root.findtext("cap:info/cap:description", namespaces=NS) or "")
