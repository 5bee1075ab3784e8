"""CAP 1.2 documents: XSD-valid for any snapshot, Alert/Update/Cancel linking, mapping, parser, goldens."""

from __future__ import annotations

import base64
import doctest
import hashlib
import re
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from ecallgw.codecs import document as document_module
from ecallgw.codecs import msd as msd_codec
from ecallgw.codecs.document import (
    CAP_NAMESPACE,
    CAP_SEVERITY,
    MSD_MEDIA_TYPE,
    CapAlert,
    cap_identifier,
    cap_time,
    parse_cap,
    render_cap,
)
from ecallgw.errors import DecodeError, EncodeError
from ecallgw.model import IncidentSnapshot, Level, Status
from tests.codecs._snapshot_strategies import snapshots, times
from tests.codecs.test_document_json import golden_snapshot

DATA = Path(__file__).parent / "data"
XSD = etree.XMLSchema(etree.parse(str(DATA / "CAP-v1.2.xsd")))
SENDER = "ecallgw@tps.example"
T0 = 1_764_158_401.0


def assert_valid(data: bytes) -> None:
    doc = etree.fromstring(data)
    if not XSD.validate(doc):
        raise AssertionError(str(XSD.error_log))


def assert_as_elementtree_writes(data: bytes) -> None:
    """The renderer writes text itself: ElementTree, parsing and re-serialising, gets the same text."""
    root = ET.fromstring(data)
    ET.indent(root, space="  ")
    again = ET.tostring(root, encoding="unicode", default_namespace=CAP_NAMESPACE)
    text = data.decode()
    # An XML reader turns CR and CR LF in text into LF; everything else must survive unchanged.
    assert '<?xml version="1.0" encoding="UTF-8"?>\n' + again + "\n" == xml_text(text)


def xml_text(text: str) -> str:
    """What an XML 1.0 reader gets back: characters XML cannot carry replaced, line ends normalised."""
    text = re.sub("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]", "\ufffd", text)
    return text.replace("\r\n", "\n").replace("\r", "\n")


def flatten(prefix: str, value: Any) -> list[tuple[str, str]]:
    """The MSD's JSON leaves as (dotted path, text), written here independently of the codec."""
    if isinstance(value, dict):
        return [kv for k, v in value.items() for kv in flatten(f"{prefix}.{k}" if prefix else k, v)]
    if isinstance(value, bool):
        return [(prefix, str(value).lower())]
    return [(prefix, str(value))]


# --- The bar: every document valid against the CAP 1.2 schema ----------------------------------------


@settings(max_examples=400)
@given(snapshots(), times, st.none() | times, st.data())
def test_every_document_is_valid_cap_and_parses_back(
    s: IncidentSnapshot, forwarded_at: float, first_sent_at: float | None, data: st.DataObject
) -> None:
    first_revision = data.draw(st.integers(1, s.revision), label="first_revision")
    is_alert = first_sent_at is None or s.revision == first_revision
    if is_alert and s.status == "cancelled":
        with pytest.raises(EncodeError, match="Cancel without an Alert"):
            render_cap(
                s,
                sender=SENDER,
                forwarded_at=forwarded_at,
                first_sent_at=first_sent_at,
                first_revision=first_revision,
            )
        return
    out = render_cap(
        s,
        sender=SENDER,
        forwarded_at=forwarded_at,
        first_sent_at=first_sent_at,
        first_revision=first_revision,
    )
    assert_valid(out)
    assert_as_elementtree_writes(out)
    alert = parse_cap(out)
    assert (alert.incident_id, alert.revision, alert.sender) == (s.incident_id, s.revision, SENDER)
    assert alert.identifier == cap_identifier(s.incident_id, s.revision)
    assert alert.status == ("Test" if s.test else "Actual")
    assert alert.sent == cap_time(forwarded_at)
    if is_alert:
        assert (alert.msg_type, alert.references) == ("Alert", ())
    else:
        assert first_sent_at is not None
        assert alert.msg_type == ("Cancel" if s.status == "cancelled" else "Update")
        assert alert.references == (
            f"{SENDER},{cap_identifier(s.incident_id, first_revision)},{cap_time(first_sent_at)}",
        )
    assert alert.parameter("status") == s.status
    assert alert.parameter("call_id") == xml_text(s.call_id)
    if s.msd is None:
        assert alert.msd_raw is None
        assert not [n for n, _ in alert.parameters if n.startswith("msd:")]
    else:
        assert alert.msd_raw == (s.msd.raw or msd_codec.encode(s.msd))
        assert msd_codec.decode(alert.msd_raw) == s.msd
        expected = [
            ("msd:" + k.removeprefix("msd."), v) for k, v in flatten("", msd_codec.to_json_dict(s.msd))
        ]
        assert [(n, v) for n, v in alert.parameters if n.startswith("msd:")] == expected
    if s.position is None:
        assert alert.circle is None
    else:
        lat, lon, radius = re.fullmatch(r"(\S+),(\S+) (\S+)", alert.circle or "").groups()  # type: ignore[union-attr]
        assert float(lat) == pytest.approx(s.position.lat, abs=1e-7)
        assert float(lon) == pytest.approx(s.position.lon, abs=1e-7)
        assert float(radius) == (0.15 if s.position.trusted else 1.0)


@given(
    st.text(min_size=1, max_size=40) | st.sampled_from([":", "a:1", "::", "%41", "a b,<&>"]),
    st.integers(1, 10**6),
)
def test_identifiers_are_deterministic_cap_tokens(incident_id: str, revision: int) -> None:
    ident = cap_identifier(incident_id, revision)
    assert ident == cap_identifier(incident_id, revision)
    # CAP 1.2 §3.2.1: no spaces, commas, '<' or '&' in identifiers.
    assert not re.search(r"[\s,<&]", ident)
    assert ident.endswith(f":{revision}")
    assert cap_identifier(incident_id + "x", revision) != ident
    # ... and the parser gets the exact id and revision back from it, colons and all.
    alert = parse_cap(
        render_cap(
            replace(golden_snapshot(), incident_id=incident_id, revision=revision),
            sender=SENDER,
            forwarded_at=T0,
        )
    )
    assert (alert.incident_id, alert.revision) == (incident_id, revision)


# --- Message types and references -----------------------------------------------------------------------


def cap(s: IncidentSnapshot, **kwargs: Any) -> CapAlert:
    out = render_cap(s, sender=SENDER, forwarded_at=T0 + 60, **kwargs)
    assert_valid(out)
    return parse_cap(out)


def test_alert_then_update_then_cancel_reference_the_alert() -> None:
    first = golden_snapshot()
    alert = cap(first)
    assert (alert.msg_type, alert.identifier, alert.references) == (
        "Alert",
        "ecallgw:inc-4f1c2a9e0b7d6c5a3e2f1d0c:1",
        (),
    )
    ref = f"{SENDER},{alert.identifier},{cap_time(T0 + 60)}"
    update = cap(replace(first, revision=2, status="updated"), first_sent_at=T0 + 60)
    assert (update.msg_type, update.references) == ("Update", (ref,))
    cancel = cap(replace(first, revision=3, status="cancelled"), first_sent_at=T0 + 60)
    assert (cancel.msg_type, cancel.references) == ("Cancel", (ref,))
    assert len({alert.identifier, update.identifier, cancel.identifier}) == 3


def test_first_message_to_a_receiver_is_an_alert_whatever_the_revision() -> None:
    # Escalated to this PSAP at revision 3: it gets an Alert, and later updates reference revision 3.
    s = replace(golden_snapshot(), revision=3, status="updated")
    assert cap(s).msg_type == "Alert"
    later = cap(replace(s, revision=4), first_sent_at=T0, first_revision=3)
    assert later.references == (f"{SENDER},{cap_identifier(s.incident_id, 3)},{cap_time(T0)}",)


def test_cancel_for_a_receiver_that_never_got_the_alert_is_refused() -> None:
    with pytest.raises(EncodeError):
        render_cap(replace(golden_snapshot(), status="cancelled"), sender=SENDER, forwarded_at=T0)


@pytest.mark.parametrize("sender", ["", "two words", "a,b", "a<b", "a&b", "tab\there"])
def test_sender_cap_forbids_is_refused(sender: str) -> None:
    with pytest.raises(EncodeError):
        render_cap(golden_snapshot(), sender=sender, forwarded_at=T0)


def test_docstring_examples() -> None:
    result = doctest.testmod(document_module)
    assert (result.failed, result.attempted > 0) == (0, True)


def test_test_calls_have_status_test() -> None:
    assert cap(replace(golden_snapshot(), test=True)).status == "Test"
    assert cap(golden_snapshot()).status == "Actual"


# --- The documented level -> urgency/severity/certainty mapping (docs/documents.md) ------------------------

MAPPING: list[tuple[Level, Status, tuple[str, str, str]]] = [
    ("critical", "open", ("Immediate", "Extreme", "Likely")),
    ("high", "open", ("Immediate", "Severe", "Likely")),
    ("medium", "updated", ("Expected", "Moderate", "Possible")),
    ("low", "open", ("Expected", "Minor", "Possible")),
    # cancelled: the emergency is over or never was; resolved: handled, nothing more to do
    ("critical", "cancelled", ("Past", "Extreme", "Unlikely")),
    ("high", "resolved", ("Past", "Severe", "Likely")),
]


@pytest.mark.parametrize(("level", "status", "expected"), MAPPING, ids=[f"{m[0]}-{m[1]}" for m in MAPPING])
def test_level_maps_to_urgency_severity_certainty(
    level: Level, status: Status, expected: tuple[str, str, str]
) -> None:
    s = replace(golden_snapshot(), revision=2, status=status)
    s = replace(s, severity=replace(s.severity, level=level))
    alert = cap(s, first_sent_at=T0)
    assert (alert.urgency, alert.severity, alert.certainty) == expected
    assert CAP_SEVERITY[level][1] == expected[1]


# --- Parser: refuses what is not one of our alerts, only DecodeError ------------------------------------

GOOD = render_cap(golden_snapshot(), sender=SENDER, forwarded_at=T0)
GOOD_UPDATE = render_cap(
    replace(golden_snapshot(), revision=2), sender=SENDER, forwarded_at=T0, first_sent_at=T0
)


def _edit(data: bytes, old: str, new: str) -> bytes:
    assert old.encode() in data, old
    return data.replace(old.encode(), new.encode(), 1)


RAW_B64 = base64.b64encode(golden_snapshot().msd.raw).decode()  # type: ignore[union-attr]
BAD_CAPS = [
    # (document, path, words in the reason)
    (b"<alert", "", "not well-formed"),
    (b"", "", "not well-formed"),
    (b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "y">]><a>&x;</a>', "", "DTD"),
    (b"<alert/>", "/", "not the CAP 1.2 alert"),
    (
        _edit(GOOD, "<identifier>", "<identifierX>").replace(b"</identifier>", b"</identifierX>"),
        "/alert/identifier",
        "missing",
    ),
    (_edit(GOOD, "<status>Actual", "<status>Real"), "/alert/status", "not a CAP status"),
    (_edit(GOOD, "<msgType>Alert", "<msgType>Notice"), "/alert/msgType", "not a CAP message type"),
    (_edit(GOOD, "<msgType>Alert", "<msgType>Update"), "/alert/references", "without references"),
    (
        re.sub(rb"<references>[^<]*", b"<references>x,y", GOOD_UPDATE),
        "/alert/references",
        "sender,identifier,sent",
    ),
    (_edit(GOOD, "<identifier>ecallgw:", "<identifier>other:"), "/alert/identifier", "is not ecallgw:"),
    (_edit(GOOD, "0c:1</identifier>", "0c:01</identifier>"), "/alert/identifier", "is not ecallgw:"),
    (_edit(GOOD, "<identifier>ecallgw:inc-", "<identifier>ecallgw:inc%2D"), "/alert/identifier", "canonical"),
    (_edit(GOOD, RAW_B64, "!!" + RAW_B64[2:]), "/alert/info/resource/derefUri", "not base64"),
    (_edit(GOOD, RAW_B64, "AAAA" + RAW_B64[4:]), "/alert/info/resource/digest", "does not match"),
    (_edit(GOOD, "<size>46<", "<size>45<"), "/alert/info/resource/size", "does not match"),
]


@pytest.mark.parametrize(("data", "path", "why"), BAD_CAPS, ids=[f"{b[1]}-{b[2]}" for b in BAD_CAPS])
def test_parser_refuses_with_path_and_reason(data: bytes, path: str, why: str) -> None:
    with pytest.raises(DecodeError) as err:
        parse_cap(data)
    assert (err.value.codec, err.value.path) == ("cap", path)
    assert why in err.value.reason


def test_resource_carries_size_digest_and_mime_type() -> None:
    root = etree.fromstring(GOOD)
    ns = {"cap": "urn:oasis:names:tc:emergency:cap:1.2"}
    raw = golden_snapshot().msd.raw  # type: ignore[union-attr]
    assert root.findtext("cap:info/cap:resource/cap:mimeType", namespaces=ns) == MSD_MEDIA_TYPE
    assert root.findtext("cap:info/cap:resource/cap:size", namespaces=ns) == str(len(raw))
    assert root.findtext("cap:info/cap:resource/cap:digest", namespaces=ns) == hashlib.sha1(raw).hexdigest()


@given(st.binary(max_size=300))
def test_random_bytes_raise_only_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        parse_cap(data)


@given(st.data())
def test_mutated_documents_raise_only_decode_error(data: st.DataObject) -> None:
    buf = bytearray(GOOD_UPDATE)
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        buf[data.draw(st.integers(0, len(buf) - 1), label="index")] = data.draw(
            st.integers(0, 255), label="byte"
        )
    try:
        alert = parse_cap(bytes(buf))
    except DecodeError as exc:
        assert exc.codec == "cap"
    else:
        assert alert.incident_id


# --- Golden files (reviewed by eye; regenerate with `python -m tests.codecs.test_document_cap`) ---------


def golden_documents() -> dict[str, bytes]:
    s = golden_snapshot()
    return {
        "cap-alert.xml": render_cap(s, sender=SENDER, forwarded_at=T0),
        "cap-update.xml": render_cap(
            replace(
                s,
                revision=2,
                status="updated",
                updated_at=T0 + 40,
                reasons=(*s.reasons, replace(s.reasons[0], code="position_update", text="new NMEA position")),
            ),
            sender=SENDER,
            forwarded_at=T0 + 41,
            first_sent_at=T0,
        ),
        "cap-cancel.xml": render_cap(
            replace(
                s,
                revision=3,
                status="cancelled",
                updated_at=T0 + 90,
                reasons=(
                    replace(s.reasons[0], code="cancelled_by_vehicle", text="occupants cancelled the call"),
                ),
            ),
            sender=SENDER,
            forwarded_at=T0 + 91,
            first_sent_at=T0,
        ),
    }


@pytest.mark.parametrize("name", ["cap-alert.xml", "cap-update.xml", "cap-cancel.xml"])
def test_golden_documents(name: str) -> None:
    produced = golden_documents()[name]
    assert_valid(produced)
    assert produced == (DATA / name).read_bytes()


if __name__ == "__main__":
    for file_name, content in golden_documents().items():
        (DATA / file_name).write_bytes(content)
        print(f"wrote {DATA / file_name}")
