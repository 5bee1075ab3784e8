"""The operator console: a page served by ``ecallgw serve`` at ``/console/`` (docs/console.md).

Static assets (``index.html``, ``console.js``, ``console.css``, ``i18n/*.json``, Leaflet vendored
under ``vendor/leaflet/``) need no build step; `Console` registers their routes, sign-in and sign-out
on the HTTP server, and `Sessions` backs the session cookie the operator API accepts.
"""

from ecallgw.console.server import Console
from ecallgw.console.session import Sessions

__all__ = ["Console", "Sessions"]
