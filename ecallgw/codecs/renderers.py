"""The output formats a receiver can be configured with (``receivers.<name>.format``), by name.

A format is a `Renderer`: it turns one incident revision into bytes of one media type. Adding one
is a module in ``ecallgw/codecs/`` with a class of this shape (``__init__(sender)``) and one line in
`FORMATS`; the configuration accepts the name from then on (docs/architecture.md, "How to add").
The forwarder looks the renderer up once per receiver, when it builds its lane, never per message.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Mapping
from typing import Protocol

from ecallgw.codecs import document
from ecallgw.codecs.eido import EidoRenderer
from ecallgw.model import IncidentSnapshot

__all__ = ["FORMATS", "CapRenderer", "JsonRenderer", "Renderer", "renderer"]


class Renderer(Protocol):
    """One output format.

    Attributes:
        media_type: the Content-Type of what `render` returns.
        needs_first: True when `render` needs the receiver's first confirmed delivery of the incident
            (``first``), as CAP Updates and Cancels reference the Alert the receiver has; the
            forwarder then reads it from the store when it does not hold it.
    """

    media_type: str
    needs_first: bool

    def render(
        self, snapshot: IncidentSnapshot, *, forwarded_at: float, first: tuple[int, float] | None
    ) -> bytes:
        """Render one revision sent at ``forwarded_at``.

        Args:
            snapshot: the revision.
            forwarded_at: the send time (epoch seconds UTC).
            first: (revision, sent time) of the first revision this receiver confirmed for the
                incident, or None (always None unless `needs_first`).

        Raises:
            EncodeError: the revision cannot be rendered in this format.
        """
        ...


class JsonRenderer:
    """``json``: the incident document (docs/interfaces.md, `document.render_json`)."""

    media_type = document.JSON_MEDIA_TYPE
    needs_first = False

    def __init__(self, sender: str) -> None:
        del sender  # the incident document names no sender

    def render(
        self, snapshot: IncidentSnapshot, *, forwarded_at: float, first: tuple[int, float] | None
    ) -> bytes:
        """See `Renderer.render`."""
        return document.render_json(snapshot, forwarded_at=forwarded_at)


class CapRenderer:
    """``cap``: OASIS CAP 1.2 (`document.render_cap`); Updates and Cancels reference the first Alert."""

    media_type = document.CAP_MEDIA_TYPE
    needs_first = True

    def __init__(self, sender: str) -> None:
        self.sender = sender

    def render(
        self, snapshot: IncidentSnapshot, *, forwarded_at: float, first: tuple[int, float] | None
    ) -> bytes:
        """See `Renderer.render`."""
        return document.render_cap(
            snapshot,
            sender=self.sender,
            forwarded_at=forwarded_at,
            first_sent_at=first[1] if first else None,
            first_revision=first[0] if first else snapshot.revision,
        )


FORMATS: Mapping[str, Callable[[str], Renderer]] = types.MappingProxyType(
    {
        "json": JsonRenderer,
        "cap": CapRenderer,
        "eido": EidoRenderer,  # NENA-STA-021.1b EIDO JSON (codecs/eido.py)
    }
)
"""Format name → renderer class, constructed with the gateway's identity (``pipeline.sender``)."""


def renderer(format: str, *, sender: str) -> Renderer:
    """The renderer of ``format`` (a name in `FORMATS`) for documents sent as ``sender``.

    Raises:
        KeyError: for a name not in `FORMATS` (the configuration refuses those before).
    """
    return FORMATS[format](sender)
