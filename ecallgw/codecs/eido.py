"""Render an incident revision as a NENA Emergency Incident Data Object (EIDO), NENA-STA-021.1b JSON.

An EIDO is the whole state of one incident, split into data components that name each other by
``$id`` (``{"$ref": id}``); every component carries the prologue (``$id``, ``lastUpdateTimeStamp``,
``updatedByAgencyReference``). The incident is tracked by the EIDO's own ``$id``, its Incident
Tracking Identifier (``urn:emergency:uid:incidentid:<id>:<element>``, NENA-STA-010): every revision
of an incident is sent as a new EIDO with that same ``$id``, the same component ids and a later
``lastUpdateTimeStamp``, which is how EIDO conveys an update (a receiver replaces each component by
the newer one of the same ``$id``). So the EIDO needs nothing from earlier deliveries, unlike CAP.

The mapping, field by field, is in docs/documents.md §EIDO; the schema the tests validate against
is the official one (tests/codecs/data/eido/, from github NENA911/EIDO-JSON).
"""

from __future__ import annotations

import base64
import html
import math
from typing import Any

import orjson

from ecallgw.codecs import msd as msd_codec
from ecallgw.codecs.document import CAP_AREA_RADIUS_KM, MSD_MEDIA_TYPE, _msd_raw, _xml_text, iso_time
from ecallgw.errors import EncodeError
from ecallgw.model import IncidentSnapshot, Position, Reason

__all__ = ["EIDO_MEDIA_TYPE", "EIDO_VERSION", "EidoRenderer", "eido_document", "render_eido", "tracking_id"]

EIDO_MEDIA_TYPE = "application/emergency.eido+json"
"""The media type NENA assigned to the EIDO (NENA-STA-024 §4.7.4, the ``Accept`` of an EIDO request)."""
EIDO_VERSION = "1.0"
"""``eidoVersion``: the only value the NENA-STA-021.1b schema allows."""
MSD_JSON_PURPOSE = "EmergencyCallData.eCall.MSD+json"
"""``urlPurpose`` of the additional data that carries the decoded MSD (our JSON form, docs/interfaces.md)."""

_URN_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_STATUS_TEXT = {"open": "Open", "updated": "Open", "cancelled": "Closed", "resolved": "Closed"}
_CALL_STATE = {"open": "callBegin", "updated": "callBegin", "cancelled": "callEnd", "resolved": "callEnd"}


def _urn_part(text: str) -> str:
    # One segment of a NENA URN: anything but unreserved characters percent-encoded (UTF-8), so an
    # id with a colon cannot be read as two segments.
    return "".join(
        c if c in _URN_SAFE else "".join(f"%{b:02X}" for b in c.encode("utf-8", "surrogatepass"))
        for c in text
    )


def _element(sender: str) -> str:
    # The domain part of ``name@domain`` (the CAP sender form), else the whole sender.
    return _urn_part(sender.rpartition("@")[2] or sender)


def tracking_id(incident_id: str, sender: str) -> str:
    """The Incident Tracking Identifier of an incident: the EIDO's ``$id`` for every revision.

    >>> tracking_id("inc-4f1c2a9e0b7d6c5a3e2f1d0c", "ecallgw@tps.example")
    'urn:emergency:uid:incidentid:inc-4f1c2a9e0b7d6c5a3e2f1d0c:tps.example'
    """
    return f"urn:emergency:uid:incidentid:{_urn_part(incident_id)}:{_element(sender)}"


def _ref(id_: str) -> dict[str, str]:
    return {"$ref": id_}


def _text(value: str) -> list[dict[str, str]]:
    # NIEM text and string values are arrays of {"value": ...} objects in the EIDO's NIEM types.
    return [{"value": value}]


def _pidf_lo(p: Position, entity: str, at: str) -> str:
    """The position as a PIDF-LO (RFC 4119, RFC 5491 geodetic Circle), the form ``locationByValue`` takes."""
    if not (math.isfinite(p.lat) and math.isfinite(p.lon) and abs(p.lat) <= 90 and abs(p.lon) <= 180):
        raise EncodeError(f"position ({p.lat!r}, {p.lon!r}) is outside ±90°/±180°")
    if p.accuracy_m is not None:
        # A stated accuracy (a caller's browser position: 95 %) is the circle; else what CAP's area
        # uses for the MSD's trust flag.
        if not (math.isfinite(p.accuracy_m) and p.accuracy_m >= 0):
            raise EncodeError(f"position accuracy {p.accuracy_m!r} m is not a finite distance")
        radius_m = max(1, math.ceil(p.accuracy_m))
    else:
        radius_m = round(CAP_AREA_RADIUS_KM[p.trusted] * 1000)
    method = "GPS" if p.source in ("msd", "nmea") else "Derived"  # RFC 4119 method tokens
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:gp="urn:ietf:params:xml:ns:pidf:geopriv10"'
        ' xmlns:gml="http://www.opengis.net/gml" xmlns:gs="http://www.opengis.net/pidflo/1.0"'
        f' entity="{html.escape(_xml_text(entity))}">'
        f'<tuple id="vehicle"><status><gp:geopriv><gp:location-info>'
        f'<gs:Circle srsName="urn:ogc:def:crs:EPSG::4326"><gml:pos>{p.lat:.7f} {p.lon:.7f}</gml:pos>'
        f'<gs:radius uom="urn:ogc:def:uom:EPSG::9001">{radius_m}</gs:radius></gs:Circle>'
        f"</gp:location-info><gp:usage-rules/><gp:method>{method}</gp:method></gp:geopriv></status>"
        f"<timestamp>{at}</timestamp></tuple></presence>"
    )


def _notes_html(s: IncidentSnapshot) -> str:
    # notesActionComments is HTML5 (NENA-STA-021.1b NotesType): every text from a vehicle, a provider
    # or an operator is escaped.
    def items(reasons: tuple[Reason, ...]) -> str:
        return "".join(f"<li>{html.escape(_xml_text(f'{r.code}: {r.text}'))}</li>" for r in reasons)

    text = f"<p>Triage severity: {s.severity.level} ({s.severity.score}/100)</p>"
    if s.severity.reasons:
        text += f"<ul>{items(s.severity.reasons)}</ul>"
    if s.reasons:
        text += f"<p>Triage: {html.escape(s.status)}</p><ul>{items(s.reasons)}</ul>"
    return text


def eido_document(snapshot: IncidentSnapshot, *, sender: str) -> dict[str, Any]:
    """One revision as an EIDO (a dict of JSON types; :func:`render_eido` serialises it).

    The EIDO carries no send time: it is stamped with the revision's ``updated_at`` (its last
    change), so a retried delivery is the same document.

    Args:
        snapshot: the revision.
        sender: this gateway's identity (``pipeline.sender``, ``name@domain``): the issuing element,
            and the agency (its domain) that updated every component.

    Raises:
        EncodeError: for a time or position that cannot be rendered.
    """
    s = snapshot
    if not isinstance(sender, str) or not sender:
        raise EncodeError(f"EIDO issuing element {sender!r} is empty")
    eido_id = tracking_id(s.incident_id, sender)
    agency = _element(sender)
    at = iso_time(s.updated_at)
    prologue_agency = _ref(agency)

    def component(suffix: str, **fields: Any) -> dict[str, Any]:
        return {
            "$id": f"{eido_id}:{suffix}",
            "lastUpdateTimeStamp": at,
            "updatedByAgencyReference": prologue_agency,
            **fields,
        }

    call_id = f"urn:emergency:uid:callid:{_urn_part(s.call_id)}:{agency}"
    kind = "automatic" if s.automatic else "manual"
    closed = s.status in ("cancelled", "resolved")
    additional: list[dict[str, Any]] = []
    if s.msd is not None:
        raw = _msd_raw(s.msd)
        additional.append(
            component(
                "msd",
                additionalDataByValue=base64.b64encode(raw).decode("ascii"),
                urlPurpose=MSD_MEDIA_TYPE.removeprefix("application/"),
            )
        )
        decoded = orjson.dumps(msd_codec.to_json_dict(s.msd)).decode()
        additional.append(component("msd-json", additionalDataByValue=decoded, urlPurpose=MSD_JSON_PURPOSE))
    ad_refs = [_ref(a["$id"]) for a in additional]
    location_refs = [_ref(f"{eido_id}:location")] if s.position is not None else []
    notes = component("triage", notesActionComments=_notes_html(s))

    incident: dict[str, Any] = component(
        "incident",
        incidentTypeCommonRegistryText="eCall",
        incidentTypeInternalCode=f"ecall-{kind}" + ("-test" if s.test else ""),
        incidentTypeInternalText=("Test " if s.test else "") + f"{kind} eCall",
        incidentStatusCommonRegistryText=[_STATUS_TEXT[s.status]],
        incidentStatusInternalText=[s.status],
        internalIncidentId=s.incident_id,
        incidentPriorityInternalText=s.severity.level,
        documentIdentification=[f"revision:{s.revision}"],
        vehicleReference=[_ref(f"{eido_id}:vehicle")],
        notesReference=[_ref(notes["$id"])],
    )
    if location_refs:
        incident["locationReference"] = location_refs
    if closed:
        incident["dispositionComponent"] = [
            component(
                "disposition",
                dispositionCommonRegistryCode=s.status,
                dispositionPrimaryIndicator=True,
                dispositionDescriptionText="; ".join(f"{r.code}: {r.text}" for r in s.reasons) or s.status,
            )
        ]

    call: dict[str, Any] = {
        "$id": call_id,
        "lastUpdateTimeStamp": at,
        "updatedByAgencyReference": prologue_agency,
        "callStateRegistryText": _CALL_STATE[s.status],
        "standardPrimaryCallType": "emergency",
        "localCallType": f"eCall {kind}" + (" test" if s.test else ""),
        "direction": "incoming",
        "callStartTimestamp": iso_time(s.received_at),
        "notesReference": [_ref(notes["$id"])],
    }
    if ad_refs:
        call["additionalDataReference"] = ad_refs
    if location_refs:
        call["locationReference"] = location_refs

    vehicle_ids: list[dict[str, Any]] = []
    if s.msd is not None:
        vehicle_ids.append({"identificationId": _text(s.msd.vin), "category": _text("VIN")})
    vehicle_ids.append(
        {
            "identificationId": _text(s.vehicle),
            "category": _text("telematics provider vehicle key"),
            "source": _text(s.tps),
        }
    )
    nc_vehicle: dict[str, Any] = {"identification": vehicle_ids}
    if s.msd is not None:
        structure = s.msd.structure
        nc_vehicle["description"] = _text(f"EN 15722 vehicle type {structure.control.vehicle_type.name}")
    vehicle: dict[str, Any] = component(
        "vehicle",
        ncVehicleComponent=nc_vehicle,
        vehicleRelationshipType=["Involved"],
        vehicleRelationshipTimeStamp=iso_time(s.received_at),
    )
    if ad_refs:
        vehicle["additionalDataReference"] = ad_refs
    if location_refs:
        vehicle["locationReference"] = location_refs

    doc: dict[str, Any] = {
        "$id": eido_id,
        "lastUpdateTimeStamp": at,
        "updatedByAgencyReference": prologue_agency,
        "eidoVersion": EIDO_VERSION,
        "issuingElementIdentification": sender,
        "incidentComponent": incident,
        "callComponent": [call],
        "agencyComponent": [
            component(
                "agency",
                agencyRoleDescriptionRegistryText=["CallReceiving"],
                # The IANA urn:emergency:service:responder registry names no telematics provider.
                agencyType=[],
            )
            | {"$id": agency}
        ],
        "vehicleComponent": [vehicle],
        "notesComponent": [notes],
    }
    if s.callback is not None:
        callback = component("callback", callBackInformationUri=[f"tel:{s.callback}"])
        call["callBackReference"] = _ref(callback["$id"])
        doc["callbackComponent"] = [callback]
    if additional:
        doc["additionalDataComponent"] = additional
    if s.position is not None:
        p = s.position
        trust = "trusted" if p.trusted else "not trusted"
        doc["locationComponent"] = [
            component(
                "location",
                locationTypeDescriptionRegistryText="Caller",
                locationByValue=_pidf_lo(p, f"pres:{_urn_part(s.vehicle)}@{_urn_part(s.tps)}", at),
                locationDescriptionText=f"vehicle position from the {p.source}, {trust}",
            )
        ]
    return doc


def render_eido(snapshot: IncidentSnapshot, *, sender: str) -> bytes:
    """One revision as EIDO JSON (UTF-8); see :func:`eido_document`.

    Raises:
        EncodeError: for a time or position that cannot be rendered, or text that is not Unicode.
    """
    try:
        return orjson.dumps(eido_document(snapshot, sender=sender))
    except orjson.JSONEncodeError as exc:
        raise EncodeError(f"EIDO: {exc}") from exc


class EidoRenderer:
    """The ``eido`` format (`ecallgw.codecs.renderers`): every revision a whole EIDO, no references."""

    media_type = EIDO_MEDIA_TYPE
    needs_first = False

    def __init__(self, sender: str) -> None:
        self.sender = sender

    def render(
        self, snapshot: IncidentSnapshot, *, forwarded_at: float, first: tuple[int, float] | None
    ) -> bytes:
        """See :func:`render_eido`: neither the send time nor ``first`` is in an EIDO."""
        return render_eido(snapshot, sender=self.sender)
