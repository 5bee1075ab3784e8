"""The store: the journal, incidents, revisions, outbox, deliveries, quarantine and audit.

``protocol.py`` says what the gateway needs; ``sqlite.py`` is the embedded default and
``postgres.py`` the server database that replicas share (``make_store`` picks by
``store.backend``).
"""

from ecallgw.gateway.store.protocol import IncidentRow, RevisionRow, Store
from ecallgw.gateway.store.sqlite import SCHEMA, SqliteStore

__all__ = ["SCHEMA", "IncidentRow", "RevisionRow", "SqliteStore", "Store"]
