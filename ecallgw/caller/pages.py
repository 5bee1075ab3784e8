"""The caller's HTML pages, rendered with every value escaped (pure).

The pages load one stylesheet and one script from ``/caller-assets/`` (package data, served by the
gateway under ``Content-Security-Policy: default-src 'self'``); the script reads its texts from the
``data-*`` attributes of ``#page`` and writes only through ``textContent``.
"""

from __future__ import annotations

from html import escape
from urllib.parse import quote

from ecallgw.caller.texts import LANGS, TEXTS, WHATS, t

__all__ = ["assist_page", "gone_page", "location_page", "tracking_page"]


def _shell(lang: str, title: str, kind: str, data: dict[str, str], body: str, path: str) -> str:
    attrs = " ".join(f'data-{k}="{escape(v)}"' for k, v in data.items())
    langs = " ".join(
        f'<a href="{escape(path)}?lang={code}" hreflang="{code}" lang="{code}"'
        f"{' aria-current=' + chr(34) + 'true' + chr(34) if code == lang else ''}>"
        f"{escape(TEXTS[code]['lang_name'])}</a>"
        for code in LANGS
    )
    return (
        f'<!doctype html>\n<html lang="{lang}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="referrer" content="no-referrer">'
        f"<title>{escape(title)}</title>"
        '<link rel="stylesheet" href="/caller-assets/caller.css"></head>'
        f'<body><main id="page" data-kind="{kind}" {attrs}>'
        f'<nav class="langs" aria-label="language">{langs}</nav>'
        f"<h1>{escape(title)}</h1>{body}</main>"
        '<script src="/caller-assets/caller.js"></script></body></html>\n'
    )


def location_page(lang: str, path: str) -> str:
    """The consent text and the one button that sends the browser's position."""
    data = {k: t(lang, k) for k in ("sending", "sent", "denied", "failed")}
    data["gone"] = t(lang, "gone_body")
    body = (
        f'<p id="consent">{escape(t(lang, "consent"))}</p>'
        f'<button id="share" type="button">{escape(t(lang, "share"))}</button>'
        '<p id="status" class="status" role="status" aria-live="polite"></p>'
    )
    return _shell(lang, t(lang, "location_title"), "location", data, body, path)


def gone_page(lang: str, path: str) -> str:
    """An expired, revoked, used-up or unknown link: said plainly."""
    body = f'<div class="gone"><p id="gone">{escape(t(lang, "gone_body"))}</p></div>'
    return _shell(lang, t(lang, "gone_title"), "gone", {}, body, path)


def assist_page(lang: str, path: str) -> str:
    """The breakdown assistance form."""
    data = {k: t(lang, k) for k in ("denied", "failed", "submitted", "follow", "invalid")}
    data["gone"] = t(lang, "gone_body")
    data["position-set"] = t(lang, "position_set")
    options = "".join(f'<option value="{w}">{escape(t(lang, "what_" + w))}</option>' for w in WHATS)
    body = (
        f"<p>{escape(t(lang, 'assist_intro'))}</p>"
        '<form id="assist" novalidate>'
        f"<label>{escape(t(lang, 'where'))}</label>"
        f'<button id="locate" type="button" class="secondary">{escape(t(lang, "use_position"))}</button>'
        '<p id="located" class="small" role="status"></p>'
        '<input type="hidden" id="lat"><input type="hidden" id="lon"><input type="hidden" id="accuracy_m">'
        f'<label for="address">{escape(t(lang, "address"))}</label>'
        '<input id="address" name="address" maxlength="300" autocomplete="street-address">'
        f'<label for="vehicle">{escape(t(lang, "vehicle"))}</label>'
        '<input id="vehicle" name="vehicle" maxlength="200">'
        f'<label for="what">{escape(t(lang, "what"))}</label>'
        f'<select id="what" name="what">{options}</select>'
        f'<label for="phone">{escape(t(lang, "phone"))}</label>'
        '<input id="phone" name="phone" type="tel" maxlength="32" autocomplete="tel">'
        f'<p></p><button id="submit" type="submit">{escape(t(lang, "submit"))}</button>'
        "</form>"
        '<p id="status" class="status" role="status" aria-live="polite"></p>'
        '<p><a id="follow" hidden></a></p>'
    )
    return _shell(lang, t(lang, "assist_title"), "assist", data, body, path)


def tracking_page(lang: str, path: str, state: dict[str, object]) -> str:
    """The case's state (first rendered here, then refreshed by the script every few seconds)."""
    rows = []
    for key, label in (
        ("state", "state"),
        ("provider", "provider"),
        ("eta", "eta"),
        ("garage", "garage"),
        ("replacement", "replacement"),
        ("message", "message"),
        ("updated", "updated"),
    ):
        value = state.get(key)
        shown = "" if value is None else str(value)
        hidden = "" if shown else " hidden"
        rows.append(
            f'<div{hidden}><dt>{escape(t(lang, label))}</dt><dd id="f-{key}">{escape(shown)}</dd></div>'
        )
    body = (
        f'<dl id="case">{"".join(rows)}</dl>'
        f'<p class="small">{escape(t(lang, "live"))}</p>'
        '<p id="status" class="status" role="status" aria-live="polite"></p>'
    )
    return _shell(lang, t(lang, "tracking_title"), "tracking", {"gone": t(lang, "gone_body")}, body, path)


def link_url(base: str, prefix: str, token: str) -> str:
    """The URL sent to the caller: ``{base}/{prefix}/{token}``."""
    return f"{base.rstrip('/')}/{prefix}/{quote(token, safe='')}"
