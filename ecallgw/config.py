"""Load and validate the daemon's configuration: one tree of frozen dataclasses.

Layers, later ones winning: the defaults embedded below, a TOML file, ``ECALLGW_*`` environment
variables, command-line overrides. Environment variables and overrides address a key by its dotted
path; in the environment the dots become double underscores::

    ECALLGW_MQTT__PORT=1884               mqtt.port = 1884
    ECALLGW_RECEIVERS__PSAP__URL=http://… receivers.psap.url = "http://…"
    ECALLGW_RECEIVERS__PSAP_FALLBACK__URL receivers.psap-fallback.url (no receiver psap_fallback)
    ecallgw serve --set store.path=/var/lib/ecallgw/ecallgw.sqlite3

An ``ECALLGW_*`` variable that names no key is an error naming the variable (`_env_key`).

Every value is converted to the field's type and checked once, at start-up; a bad one raises
`ConfigError` naming the key and the value. Secrets (tokens, passwords, keys) are `Secret`s whose
``repr`` is masked. The ``[triage]`` table is kept as a mapping and handed to
``TriagePolicy.from_mapping`` unchanged, so the pure triage code owns its own thresholds.
"""

from __future__ import annotations

import dataclasses
import hmac
import ipaddress
import math
import re
import tomllib
import types
import typing
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ecallgw.errors import ConfigError

__all__ = [
    "AuthConfig",
    "Config",
    "ConsoleConfig",
    "HttpConfig",
    "LogConfig",
    "MqttConfig",
    "PipelineConfig",
    "ReceiverConfig",
    "Secret",
    "StoreConfig",
    "TokenConfig",
    "load_config",
]

ENV_PREFIX = "ECALLGW_"
_frozen = {"frozen": True, "slots": True, "kw_only": True}
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

DEFAULT_RECEIVERS: Mapping[str, Mapping[str, Any]] = types.MappingProxyType(
    {
        # The receiver names triage routes to by default (TriagePolicy: operator_receiver,
        # test_receiver, fallback_psap_receiver). A table of the same name in the configuration
        # replaces the default as a whole; MQTT for the fallback PSAP needs no address to start.
        "operator": {"kind": "operator"},
        "test": {"kind": "operator"},
        "psap-fallback": {"kind": "mqtt"},
    }
)


class Secret:
    """A string that must not appear in logs or tracebacks; ``repr`` and ``str`` mask it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself, for the one place that needs it."""
        return self._value

    def matches(self, candidate: str) -> bool:
        """Compare in constant time (a bearer token check must not leak by timing)."""
        return hmac.compare_digest(self._value.encode(), candidate.encode())

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and hmac.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return "Secret('**********')" if self._value else "Secret('')"

    __str__ = __repr__


@dataclass(**_frozen)
class StoreConfig:
    """The store: embedded SQLite (one replica) or a PostgreSQL server shared by replicas.

    Attributes:
        backend: "sqlite" (embedded, one process) or "postgresql" (any number of replicas on
            one server: docs/scaling.md).
        path: SQLite database file; its directory is created when missing.
        dsn: PostgreSQL connection string (``postgresql://user:pass@host:port/db``; a secret: it
            may hold a password). Also ``ECALLGW_STORE__DSN``.
        pool_size: PostgreSQL connections per replica (reads, the writer, the sequencer).
        statement_timeout_s: a PostgreSQL statement running longer is cancelled (and its
            transaction rolled back): a stuck server fails a commit instead of hanging it.
        replica_id: this replica's name (MQTT client id, outbox claims, leadership); "" takes
            ``{host}-{n}`` with the lowest n no live replica holds in the store.
        lease_s: the sequencer's lease (PostgreSQL): a leader that has not renewed it for this
            long is replaced and fenced, even if its connection is still open.
        outbox_lease_s: how long a replica's claim on an outbox entry holds without renewal
            (PostgreSQL); a dead replica's entries are taken over after it.
        decision_wait_s: how long an HTTP answer waits for the sequencer's decision
            (PostgreSQL) before answering with what is known (stored, no incident id yet).
        allow_plaintext: allow a PostgreSQL server beyond this host without a verified TLS link
            (``sslmode=verify-full`` or ``verify-ca`` in the DSN); refused by default.
        synchronous: SQLite ``synchronous`` in WAL mode: "full" fsyncs every group commit (survives
            power loss), "normal" survives a process crash but not a power cut.
        batch_max: units of work after which a group commit takes no more (the jobs of one
            event-loop turn are never split, so a commit can hold a turn's worth beyond it).
        retention_days: incident data older than this is deleted (EU 2015/758 art. 6: keep eCall data
            no longer than needed).
        retention_interval_s: how often the retention job runs.
        checkpoint_interval_s: how often a thread of its own copies the WAL into the database file
            (0: SQLite's automatic checkpoint, run by the commit that crosses 1,000 pages).
    """

    backend: Literal["sqlite", "postgresql"] = "sqlite"
    path: str = "var/ecallgw.sqlite3"
    dsn: Secret = field(default_factory=lambda: Secret(""))
    pool_size: int = 8
    statement_timeout_s: float = 30.0
    replica_id: str = ""
    lease_s: float = 5.0
    outbox_lease_s: float = 10.0
    decision_wait_s: float = 2.0
    allow_plaintext: bool = False
    synchronous: Literal["full", "normal"] = "full"
    batch_max: int = 512
    retention_days: float = 30.0
    retention_interval_s: float = 3600.0
    checkpoint_interval_s: float = 1.0


@dataclass(**_frozen)
class MqttConfig:
    """The MQTT source (and the MQTT sink's broker connection).

    Attributes:
        enabled: subscribe to the ingest topics.
        host: broker host.
        port: broker port.
        client_id: client identifier, [A-Za-z0-9_-]{1,64}; "" (the default) derives it from the
            replica id (``ecallgw-{replica_id}``: `ecallgw.gateway.mqtt_source.derive_client_id`).
            It must stay the same across restarts (the persistent session hangs on it) and differ
            between replicas (a broker closes the older of two connections with one id).
        username: broker user ("" for none).
        password: broker password.
        share_group: when set, subscribe as ``$share/{group}/...`` so several gateways split the load.
        topic_prefix: ingest topics are ``{topic_prefix}/{tps}/{vehicle}/{kind}``.
        keepalive_s: MQTT keepalive.
        max_inflight: most messages received but not yet acknowledged; beyond it the source stops
            reading and the broker's inflight window holds the rest (backpressure, never a drop).
        reconnect_min_s: first reconnect delay (jittered, doubling).
        reconnect_max_s: cap of the reconnect delay.
        conflict_backoff_max_s: cap of the reconnect delay while another client keeps taking our
            client id over (from 1 s, doubling, jittered).
        tls: connect over TLS (the source and the MQTT publish sink); never implied by the port.
        ca_file: PEM CA certificate(s) the broker's certificate must chain to (the only trust
            anchors then); "" trusts the system's CA store.
        cert_file: PEM client certificate for mutual TLS ("" presents none); needs ``key_file``.
        key_file: its unencrypted PEM private key.
        check_hostname: the broker's certificate must name ``host`` (an IP address as an IP
            subjectAltName); the chain is verified either way.
        tls_min_version: the oldest TLS version accepted, "TLSv1.2" or "TLSv1.3".
        allow_plaintext: allow a broker beyond this host without TLS (refused by default).
    """

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 1883
    client_id: str = ""
    username: str = ""
    password: Secret = field(default_factory=lambda: Secret(""))
    share_group: str = ""
    topic_prefix: str = "ecall/v1"
    keepalive_s: int = 30
    max_inflight: int = 1000
    reconnect_min_s: float = 0.2
    reconnect_max_s: float = 30.0
    conflict_backoff_max_s: float = 30.0
    tls: bool = False
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    check_hostname: bool = True
    tls_min_version: Literal["TLSv1.2", "TLSv1.3"] = "TLSv1.2"
    allow_plaintext: bool = False


@dataclass(**_frozen)
class HttpConfig:
    """The HTTP server: ingest, operator API, metrics and health.

    Attributes:
        enabled: serve HTTP.
        host: bind address.
        port: bind port (0 picks a free one).
        max_body_bytes: larger ingest bodies get 413.
        provider_rate_per_s: sustained ingest requests per second per provider (429 beyond).
        provider_burst: token-bucket depth of that limit.
        ready_max_outbox_age_s: ``/readyz`` fails while an undelivered outbox entry is older.
        read_timeout_s: a connection must deliver a request's headers within this long of its
            opening (or of the previous answer on a keep-alive connection), and a request its body
            within this long of the handler's first read: a slow client cannot hold a connection.
        max_sse_subscribers: concurrent operator event streams (503 beyond).
        tls_cert_file: our certificate chain (PEM); set with ``tls_key_file``, the server speaks
            HTTPS only.
        tls_key_file: its private key (PEM).
        client_ca_file: CAs whose client certificates identify callers (``auth.tokens`` entries
            with ``cert_cn`` or ``cert_sha256``); a certificate is optional unless
            ``require_client_cert``, so bearer tokens keep working.
        require_client_cert: refuse a TLS handshake without a client certificate.
        allow_plaintext: allow plain HTTP on a non-loopback ``host`` (refused by default).
    """

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 65536
    provider_rate_per_s: float = 500.0
    provider_burst: float = 1000.0
    ready_max_outbox_age_s: float = 300.0
    read_timeout_s: float = 30.0
    max_sse_subscribers: int = 64
    tls_cert_file: str = ""
    tls_key_file: str = ""
    client_ca_file: str = ""
    require_client_cert: bool = False
    allow_plaintext: bool = False


# --- Caller links, SMS and breakdown assistance (issue 14; docs/caller.md) -----------------------


@dataclass(**_frozen)
class SmsConfig:
    """The SMS gateway: a generic HTTP webhook (POST JSON ``{to, text, sender, idempotency_key}``).

    Attributes:
        url: the gateway's endpoint ("" : no SMS; links are still created and shown to operators).
        token: bearer token sent to the gateway.
        sender: the sender name or number asked for.
        timeout_s: one attempt's timeout.
        max_attempts: attempts before the SMS is given up (the link says so to operators).
        backoff_base_s: first retry delay ceiling (full jitter, doubled per attempt).
        backoff_cap_s: largest retry delay ceiling.
        ca_file: CAs trusted for an ``https://`` gateway ("" : the system's).
        allow_plaintext: allow an ``http://`` URL to a host that is not loopback.
    """

    url: str = ""
    token: Secret = field(default_factory=lambda: Secret(""))
    sender: str = "ecallgw"
    timeout_s: float = 5.0
    max_attempts: int = 8
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 60.0
    ca_file: str = ""
    allow_plaintext: bool = False


@dataclass(**_frozen)
class CallerConfig:
    """Links sent to callers (location share, case tracking) and the public pages they open.

    Attributes:
        public_url: the base of links in SMS (``https://ecall.example.org``); "" : this server's
            own ``http(s)://host:port``.
        location_ttl_s: a location link's lifetime.
        location_max_uses: positions a location link may send.
        tracking_ttl_s: a tracking link's lifetime.
        assist_ttl_s: an assistance-form link's lifetime.
        auto_location_link: triage policy switch: a new non-test call whose MSD position is
            missing or not trusted gets a location link by SMS to its callback number.
        token_rate_per_min: requests one link's token may make per minute (pages and posts).
        address_rate_per_min: requests one client address may make to the public pages per minute.
    """

    public_url: str = ""
    location_ttl_s: float = 1800.0
    location_max_uses: int = 3
    tracking_ttl_s: float = 86400.0
    assist_ttl_s: float = 3600.0
    auto_location_link: bool = False
    token_rate_per_min: int = 30
    address_rate_per_min: int = 120


CAPABILITIES = ("tow", "repair", "taxi", "replacement_car")


@dataclass(**_frozen)
class ProviderConfig:
    """One assistance provider (tow truck company, garage).

    Attributes:
        name: its name; with ``token`` it is the holder of an ``assistance`` API token.
        lat: its base, WGS84 degrees.
        lon: likewise.
        radius_km: how far from its base it serves (great-circle distance).
        capabilities: what it does: tow, repair, taxi, replacement_car.
        webhook_url: where cases are POSTed.
        webhook_token: bearer token sent with them.
        token: its own token for ``POST /v1/assistance/cases/{id}/answer`` (role ``assistance``).
        available: at start (operators and the provider change it through the API).
        area: its service area instead of ``radius_km``: a GeoJSON Polygon (an inline table
            ``{type = "Polygon", coordinates = [[[lon, lat], ...]]}`` or its JSON text); the outer
            ring counts.
    """

    name: str
    lat: float
    lon: float
    webhook_url: str
    radius_km: float = 50.0
    capabilities: tuple[str, ...] = ("tow",)
    webhook_token: Secret = field(default_factory=lambda: Secret(""))
    token: Secret = field(default_factory=lambda: Secret(""))
    available: bool = True
    area: tuple[tuple[float, float], ...] = ()


@dataclass(**_frozen)
class AssistanceConfig:
    """Breakdown assistance (bCall): the providers and how cases are dispatched to them.

    Attributes:
        answer_timeout_s: a provider that has not answered a case within this is skipped.
        webhook_timeout_s: one webhook attempt's timeout.
        webhook_attempts: attempts of one webhook before the provider is skipped.
        providers: the registry (``[[assistance.providers]]``).
    """

    answer_timeout_s: float = 120.0
    webhook_timeout_s: float = 5.0
    webhook_attempts: int = 3
    providers: tuple[ProviderConfig, ...] = ()


def _build_assistance(raw: object) -> AssistanceConfig:
    """``[assistance]`` with its ``[[assistance.providers]]`` array (the generic builder has no arrays)."""
    if not isinstance(raw, Mapping):
        raise ConfigError("assistance", raw, "must be a table")
    table = dict(raw)
    providers_raw = table.pop("providers", [])
    if not isinstance(providers_raw, list):
        raise ConfigError("assistance.providers", providers_raw, "must be an array of tables")
    providers: list[ProviderConfig] = []
    for i, p in enumerate(providers_raw):
        key = f"assistance.providers[{i}]"
        if not isinstance(p, Mapping):
            raise ConfigError(key, p, "must be a table")
        table_p = dict(p)
        area = _geojson_ring(table_p.pop("area", None), f"{key}.area")
        caps = table_p.pop("capabilities", ["tow"])
        if not isinstance(caps, list) or not caps or any(c not in CAPABILITIES for c in caps):
            raise ConfigError(f"{key}.capabilities", caps, f"a list of {', '.join(CAPABILITIES)}")
        provider = dataclasses.replace(
            _build(ProviderConfig, table_p, key), capabilities=tuple(caps), area=area
        )
        if not _NAME.match(provider.name) or any(q.name == provider.name for q in providers):
            raise ConfigError(f"{key}.name", provider.name, "a unique name of [A-Za-z0-9_-]{1,64}")
        if not (-90 <= provider.lat <= 90 and -180 <= provider.lon <= 180):
            raise ConfigError(f"{key}.lat", (provider.lat, provider.lon), "a WGS84 position in degrees")
        if not provider.radius_km > 0:
            raise ConfigError(f"{key}.radius_km", provider.radius_km, "must be > 0")
        parts = urllib.parse.urlsplit(provider.webhook_url)
        if parts.scheme != "https" and not (parts.scheme == "http" and _is_loopback(parts.hostname or "")):
            raise ConfigError(
                f"{key}.webhook_url", provider.webhook_url, "an https:// URL (http:// on loopback)"
            )
        if provider.token.reveal() and len(provider.token.reveal()) < 16:
            raise ConfigError(f"{key}.token", provider.token, "tokens are at least 16 characters")
        providers.append(provider)
    cfg: AssistanceConfig = _build(AssistanceConfig, table, "assistance")
    for k in ("answer_timeout_s", "webhook_timeout_s"):
        if not getattr(cfg, k) > 0:
            raise ConfigError(f"assistance.{k}", getattr(cfg, k), "must be > 0")
    if cfg.webhook_attempts < 1:
        raise ConfigError("assistance.webhook_attempts", cfg.webhook_attempts, "must be >= 1")
    return dataclasses.replace(cfg, providers=tuple(providers))


def _geojson_ring(raw: object, key: str) -> tuple[tuple[float, float], ...]:
    """The outer ring of a GeoJSON Polygon as (lon, lat) pairs; () when not given."""
    if raw is None:
        return ()
    if isinstance(raw, str):
        import json

        try:
            raw = json.loads(raw)
        except ValueError as exc:
            raise ConfigError(key, raw, "a GeoJSON Polygon (JSON text or an inline table)") from exc
    coords = raw.get("coordinates") if isinstance(raw, Mapping) and raw.get("type") == "Polygon" else None
    ring = coords[0] if isinstance(coords, list) and coords and isinstance(coords[0], list) else None
    ok = isinstance(ring, list) and len(ring) >= 4
    points: list[tuple[float, float]] = []
    for pt in ring if ok and ring is not None else []:
        if not (isinstance(pt, list) and len(pt) >= 2 and all(isinstance(v, int | float) for v in pt[:2])):
            ok = False
            break
        lon, lat = float(pt[0]), float(pt[1])
        if not (-180 <= lon <= 180 and -90 <= lat <= 90):
            ok = False
            break
        points.append((lon, lat))
    if not ok:
        raise ConfigError(
            key, raw, 'a GeoJSON Polygon: {type = "Polygon", coordinates = [[[lon, lat], ...]]}'
        )
    return tuple(points)


def _check_caller(c: Config) -> None:
    s = c.sms
    if s.url:
        parts = urllib.parse.urlsplit(s.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError("sms.url", s.url, "an http:// or https:// URL")
        if parts.scheme == "http" and not s.allow_plaintext and not _is_loopback(parts.hostname):
            raise ConfigError("sms.url", s.url, "https:// beyond this host (sms.allow_plaintext to allow)")
    for key, value in (
        ("sms.timeout_s", s.timeout_s),
        ("sms.backoff_base_s", s.backoff_base_s),
        ("sms.backoff_cap_s", s.backoff_cap_s),
        ("caller.location_ttl_s", c.caller.location_ttl_s),
        ("caller.tracking_ttl_s", c.caller.tracking_ttl_s),
        ("caller.assist_ttl_s", c.caller.assist_ttl_s),
    ):
        if not value > 0:
            raise ConfigError(key, value, "must be > 0")
    for key, n in (
        ("sms.max_attempts", s.max_attempts),
        ("caller.location_max_uses", c.caller.location_max_uses),
        ("caller.token_rate_per_min", c.caller.token_rate_per_min),
        ("caller.address_rate_per_min", c.caller.address_rate_per_min),
    ):
        if n < 1:
            raise ConfigError(key, n, "must be >= 1")
    if c.caller.public_url and not re.match(r"^https?://[^/]+", c.caller.public_url):
        raise ConfigError("caller.public_url", c.caller.public_url, "an http:// or https:// base URL")


# --- end of issue 14's section -------------------------------------------------------------------


@dataclass(**_frozen)
class TokenConfig:
    """One bearer token and what it may do.

    Attributes:
        name: who holds it (written to the audit log).
        role: provider (ingest under its own tps), operator (incidents API), sre (metrics, readyz),
            assistance (an assistance provider answering its cases; see ``[[assistance.providers]]``).
        token: the bearer token ("" when a client certificate identifies the holder instead).
        tps: for a provider, the ``{tps}`` it may write under.
        cert_cn: a client certificate (from ``http.client_ca_file``) with this subject CN is this
            holder, without a token.
        cert_sha256: likewise, a client certificate with this SHA-256 fingerprint (hex).
    """

    name: str
    role: Literal["provider", "operator", "sre", "assistance"]
    token: Secret = field(default_factory=lambda: Secret(""))
    tps: str = ""
    cert_cn: str = ""
    cert_sha256: str = ""


@dataclass(**_frozen)
class AuthConfig:
    """Bearer tokens; nothing but ``/healthz`` is served without one."""

    tokens: tuple[TokenConfig, ...] = ()


@dataclass(**_frozen)
class ReceiverConfig:
    """One destination of incident revisions (a PSAP, an operator desk).

    Attributes:
        name: the receiver's name as triage routes to it.
        kind: "http" (webhook POST), "mqtt" (publish to ``psap/v1/{name}/incidents`` on the
            ``[mqtt]`` broker) or "operator" (the operators' event stream of this gateway): a
            name in ``ecallgw.gateway.sinks.kinds.SINK_KINDS``.
        url: webhook URL (kind http).
        format: document format, "json", "cap" or "eido": a name in
            ``ecallgw.codecs.renderers.FORMATS``.
        token: optional bearer token sent to the receiver.
        timeout_s: one attempt's timeout.
        max_attempts: attempts before the revision is dead-lettered.
        backoff_base_s: first retry delay (full jitter, doubling).
        backoff_cap_s: cap of the retry delay.
        concurrency: deliveries in flight to this receiver (each incident's revisions stay in order).
        breaker_threshold: consecutive failures that open the circuit breaker.
        breaker_cooldown_s: the longest an open breaker waits before one probe (the cap).
        breaker_probe_initial_s: the first wait after the breaker opened; doubled after each
            failed probe up to ``breaker_cooldown_s``, reset once the receiver answers.
        ca_file: CAs trusted for an ``https://`` receiver ("" : the system's).
        cert_file: our client certificate for mutual TLS with the receiver (with ``key_file``).
        key_file: its private key.
        pin_sha256: SHA-256 (hex) of the receiver's certificate or of its public key
            (SubjectPublicKeyInfo), several separated by commas (a rotation); any other
            certificate is refused, dead letter ``tls_pin``.
        allow_plaintext: allow an ``http://`` URL to a host that is not loopback.
    """

    name: str
    kind: str = "http"
    url: str = ""
    format: str = "json"
    token: Secret = field(default_factory=lambda: Secret(""))
    timeout_s: float = 5.0
    max_attempts: int = 12
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 60.0
    concurrency: int = 16
    breaker_threshold: int = 5
    breaker_cooldown_s: float = 10.0
    breaker_probe_initial_s: float = 1.0
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    pin_sha256: str = ""
    allow_plaintext: bool = False


@dataclass(**_frozen)
class PipelineConfig:
    """The stage between sources and store.

    Attributes:
        queue_size: raw signals waiting for decode and triage (sources block beyond it).
        tick_interval_s: how often triage timers (escalations) are checked.
        dedup_window: how many recent payload digests are remembered to recognise redeliveries.
        prune_interval_s: how often closed incidents are pruned from triage memory.
        pseudonym_key: key of the keyed hash for pseudonyms (logs, triage); generated and kept in the
            store when empty.
        pseudonym_key_file: a file (mode 0600, created with a random key when missing) holding the
            key of the VIN pseudonyms in logs only, kept out of the store; "" uses the triage key
            above for logs too. Rotating it never changes incident ids.
        sender: CAP ``sender`` of forwarded documents.
        gc_tuning: ``serve`` keeps CPython's cyclic collector off the per-message path
            (ecallgw/gateway/heap.py; the figures are in docs/performance.md). Process-wide, so
            only the daemon applies it; off is CPython's defaults.
    """

    queue_size: int = 1024
    tick_interval_s: float = 1.0
    dedup_window: int = 200_000
    prune_interval_s: float = 300.0
    pseudonym_key: Secret = field(default_factory=lambda: Secret(""))
    pseudonym_key_file: str = ""
    sender: str = "ecallgw@localhost"
    gc_tuning: bool = True


@dataclass(**_frozen)
class LogConfig:
    """Logging: JSON lines on stderr.

    Attributes:
        level: debug, info, warning or error.
        access: one line per HTTP request at info on logger ``ecallgw.access`` (method, route
            template, status, duration, the caller's role; never the path, a token or a VIN).
    """

    level: Literal["debug", "info", "warning", "error"] = "info"
    access: bool = True


@dataclass(**_frozen)
class ConsoleConfig:
    """The operator console served at ``/console/`` (ecallgw/console/, docs/console.md).

    Attributes:
        enabled: serve the console and accept its session cookie on the operator API.
        session_hours: a sign-in lasts this long (then the operator signs in again).
        tile_url: map tiles, an ``https://`` (or loopback ``http://``) template with ``{z}``, ``{x}``
            and ``{y}`` ("" : no tiles; the map still shows the position and trail on a blank
            background); its host is the only one the page's Content-Security-Policy allows.
        tile_attribution: the text shown under the map for those tiles (plain text).
        cookie_secure: ``auto``: the session cookie is ``Secure`` (and ``__Host-``) when ecallgw
            itself serves TLS; ``always``: also over plain HTTP, for TLS ended by a reverse proxy
            in front (the console then works through that proxy only).
    """

    enabled: bool = True
    session_hours: float = 12.0
    tile_url: str = ""
    tile_attribution: str = ""
    cookie_secure: Literal["auto", "always"] = "auto"


@dataclass(**_frozen)
class Config:
    """The whole configuration.

    Attributes:
        store: the store.
        mqtt: the MQTT source.
        http: the HTTP server.
        auth: bearer tokens.
        pipeline: decode/triage stage.
        log: logging.
        console: the operator console.
        receivers: destinations by name (`DEFAULT_RECEIVERS` unless configured).
        triage: the ``[triage]`` table, handed to ``TriagePolicy.from_mapping``.
        drain_deadline_s: on SIGTERM, how long to keep delivering before exiting.
    """

    store: StoreConfig = field(default_factory=StoreConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    log: LogConfig = field(default_factory=LogConfig)
    console: ConsoleConfig = field(default_factory=ConsoleConfig)
    receivers: Mapping[str, ReceiverConfig] = field(default_factory=lambda: types.MappingProxyType({}))
    triage: Mapping[str, Any] = field(default_factory=lambda: types.MappingProxyType({}))
    drain_deadline_s: float = 10.0
    sms: SmsConfig = field(default_factory=SmsConfig)  # issue 14
    caller: CallerConfig = field(default_factory=CallerConfig)  # issue 14
    assistance: AssistanceConfig = field(default_factory=AssistanceConfig)  # issue 14


# --- Loading ------------------------------------------------------------------------------------


def load_config(
    path: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, str] | None = None,
    base: Mapping[str, Any] | None = None,
) -> Config:
    """Build the configuration from its layers and validate it.

    Args:
        path: a TOML file, or None for embedded defaults only.
        environ: the process environment (``ECALLGW_*`` variables are read from it); None reads nothing.
        overrides: dotted keys to string values, from command-line flags.
        base: a mapping applied between the defaults and the file (used by ``ecallgw demo``).

    Returns:
        The validated configuration.

    Raises:
        ConfigError: a file that cannot be read, an unknown key, or a value of the wrong type or range.
    """
    tree: dict[str, Any] = {}
    if base:
        _merge(tree, base)
    if path is not None:
        try:
            with open(path, "rb") as fh:
                _merge(tree, tomllib.load(fh))
        except OSError as exc:
            raise ConfigError("--config", str(path), f"cannot read: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("--config", str(path), f"not valid TOML: {exc}") from exc
    for name, value in sorted((environ or {}).items()):
        if name.startswith(ENV_PREFIX):
            _set_dotted(tree, _env_key(name, value, tree), value)
    for dotted, value in (overrides or {}).items():
        _set_dotted(tree, dotted, value)
    return _build_config(tree)


def _env_key(name: str, value: str, tree: Mapping[str, Any]) -> str:
    """The dotted key an ``ECALLGW_*`` variable names, or a `ConfigError` naming the variable.

    Names are case-insensitive (``ECALLGW_MQTT__PORT`` is ``mqtt.port``). A shell cannot export a
    name with ``-``, so a receiver segment with ``_`` also names an existing receiver (a default or
    one from the file) spelled with ``-`` (``RECEIVERS__PSAP_FALLBACK`` is ``psap-fallback``), unless
    a receiver spelled exactly so exists; a segment matching no receiver names a new one. The value
    is never printed (it may be a DSN or a token).
    """
    parts = name[len(ENV_PREFIX) :].lower().split("__")

    def bad(reason: str) -> ConfigError:
        return ConfigError(name, Secret(value), f"names no configuration key: {reason}")

    if not all(parts):
        raise bad("the form is ECALLGW_SECTION__KEY (each dot of the key as __)")
    hints = typing.get_type_hints(Config)
    section = parts[0]
    if section not in hints:
        raise bad(f"no section {section!r} (known: {', '.join(sorted(hints))}; each dot is __)")
    shape: tuple[str, ...]
    if section == "receivers":
        fields_of: type[Any] | None = ReceiverConfig
        shape = ("receivers", "<name>", "<key>")
    elif section == "auth":
        fields_of, shape = TokenConfig, ("auth", "tokens", "<name>", "<key>")
    elif section == "triage":
        from ecallgw.triage.policy import TriagePolicy  # triage owns its keys

        fields_of, shape = TriagePolicy, ("triage", "<key>")
    elif dataclasses.is_dataclass(hints[section]):
        fields_of, shape = hints[section], (section, "<key>")
    else:
        fields_of, shape = None, (section,)
    spelled = "ECALLGW_" + "__".join(p.upper() for p in shape)
    if len(parts) != len(shape) or any(p != s for p, s in zip(parts, shape, strict=True) if s[0] != "<"):
        raise bad(f"the form is {spelled}")
    if fields_of is not None:
        known = {f.name for f in dataclasses.fields(fields_of)} - {"name"}
        if parts[-1] not in known:
            where = ".".join(shape[:-1])
            raise bad(f"{where} has no key {parts[-1]!r} (known: {', '.join(sorted(known))})")
    if section == "receivers":
        given = tree.get("receivers")
        existing = [*DEFAULT_RECEIVERS, *(given if isinstance(given, Mapping) else ())]
        if parts[1] not in existing:
            same = sorted({n for n in existing if n.lower().replace("-", "_") == parts[1].replace("-", "_")})
            if len(same) > 1:
                raise bad(f"receivers {' and '.join(same)} both match: set it in the file")
            if same:
                parts[1] = same[0]
    return ".".join(parts)


def _merge(into: dict[str, Any], other: Mapping[str, Any]) -> None:
    for key, value in other.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        elif isinstance(value, Mapping):
            into[key] = {}
            _merge(into[key], value)
        else:
            into[key] = value


def _set_dotted(tree: dict[str, Any], dotted: str, value: object) -> None:
    parts = dotted.split(".")
    if parts[0] == "triage" and isinstance(value, str):
        # Our own keys are converted by their field types; the triage table is typed by triage, so
        # a value from the environment or a flag is read as a TOML literal (30, 1.5, true, "x").
        value = _toml_literal(value)
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(dotted, value, f"{part!r} is not a table")
        node = child
    node[parts[-1]] = value


def _toml_literal(text: str) -> object:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # a bare word: a string


def _build_config(tree: Mapping[str, Any]) -> Config:
    tree = dict(tree)
    triage = tree.pop("triage", {})
    if not isinstance(triage, Mapping):
        raise ConfigError("triage", triage, "must be a table")
    receivers_raw = tree.pop("receivers", {})
    if not isinstance(receivers_raw, Mapping):
        raise ConfigError("receivers", receivers_raw, "must be a table of receivers")
    receivers: dict[str, ReceiverConfig] = {}
    for name, table in {**DEFAULT_RECEIVERS, **receivers_raw}.items():
        if not _NAME.match(name):
            raise ConfigError(f"receivers.{name}", name, "receiver names are [A-Za-z0-9_-]{1,64}")
        if not isinstance(table, Mapping):
            raise ConfigError(f"receivers.{name}", table, "must be a table")
        receiver = _build(ReceiverConfig, {**table, "name": name}, f"receivers.{name}")
        _check_receiver(receiver)
        receivers[name] = receiver
    auth_raw = tree.pop("auth", {})
    tokens_raw = auth_raw.get("tokens", []) if isinstance(auth_raw, Mapping) else auth_raw
    if isinstance(tokens_raw, Mapping):  # tokens given by name (env/overrides produce tables)
        tokens_raw = [{"name": k, **v} for k, v in tokens_raw.items()]
    if not isinstance(tokens_raw, list):
        raise ConfigError("auth.tokens", tokens_raw, "must be an array of tables")
    tokens = tuple(_build(TokenConfig, t, f"auth.tokens[{i}]") for i, t in enumerate(tokens_raw))
    assistance = _build_assistance(tree.pop("assistance", {}))  # issue 14: providers hold tokens too
    tokens += tuple(
        TokenConfig(name=p.name, role="assistance", token=p.token)
        for p in assistance.providers
        if p.token.reveal()
    )
    for i, tok in enumerate(tokens):
        if tok.role == "provider" and not _NAME.match(tok.tps):
            raise ConfigError(f"auth.tokens[{i}].tps", tok.tps, "a provider token needs its tps")
        if (tok.token or not (tok.cert_cn or tok.cert_sha256)) and len(tok.token.reveal()) < 16:
            raise ConfigError(
                f"auth.tokens[{i}].token",
                tok.token,
                "tokens are at least 16 characters (or identify the holder by cert_cn or cert_sha256)",
            )
        if tok.cert_sha256 and not _is_sha256(tok.cert_sha256):
            raise ConfigError(
                f"auth.tokens[{i}].cert_sha256", tok.cert_sha256, "a SHA-256 fingerprint: 64 hex digits"
            )
        for attr in ("cert_cn", "cert_sha256"):
            value = getattr(tok, attr).replace(":", "").lower()
            if value and any(getattr(t, attr).replace(":", "").lower() == value for t in tokens[:i]):
                raise ConfigError(f"auth.tokens[{i}].{attr}", value, "already names another holder")
    seen: dict[str, int] = {}
    for i, tok in enumerate(tokens):
        secret = tok.token.reveal()
        if secret and secret in seen:
            raise ConfigError(
                f"auth.tokens[{i}].token", tok.token, f"the same token as auth.tokens[{seen[secret]}]"
            )
        seen.setdefault(secret, i)
    config: Config = _build(Config, tree, "")
    config = dataclasses.replace(
        config,
        receivers=types.MappingProxyType(receivers),
        triage=types.MappingProxyType(dict(triage)),
        auth=AuthConfig(tokens=tokens),
        assistance=assistance,
    )
    _check_caller(config)
    _check(config)
    return config


def _check_receiver(r: ReceiverConfig) -> None:
    # The registries are imported here, not at the top: the sinks import this module, and the
    # renderers pull in the codecs, which commands that never read a configuration need not load.
    from ecallgw.codecs.renderers import FORMATS
    from ecallgw.gateway.sinks.kinds import SINK_KINDS

    key = f"receivers.{r.name}"
    for attr, known in (("kind", SINK_KINDS), ("format", FORMATS)):
        if getattr(r, attr) not in known:
            raise ConfigError(
                f"{key}.{attr}", getattr(r, attr), f"must be one of {', '.join(map(repr, known))}"
            )
    if r.kind == "http" and not re.match(r"^https?://", r.url):
        raise ConfigError(f"{key}.url", r.url, "an http receiver needs an http:// or https:// URL")
    https = r.kind == "http" and r.url.startswith("https://")
    plain = r.kind == "http" and not https and not r.allow_plaintext
    if plain and not _is_loopback(urllib.parse.urlsplit(r.url).hostname or ""):
        raise ConfigError(
            f"{key}.url",
            r.url,
            f"plain http:// leaves the host unencrypted: use https:// (or {key}.allow_plaintext = true)",
        )
    for attr in ("ca_file", "cert_file", "key_file", "pin_sha256"):
        if getattr(r, attr) and not https:
            raise ConfigError(
                f"{key}.{attr}", getattr(r, attr), "only for an http receiver with an https:// URL"
            )
    if bool(r.cert_file) != bool(r.key_file):
        missing = "key_file" if r.cert_file else "cert_file"
        raise ConfigError(f"{key}.{missing}", "", "a client certificate needs both cert_file and key_file")
    if r.pin_sha256 and not all(_is_sha256(p) for p in r.pin_sha256.split(",")):
        raise ConfigError(
            f"{key}.pin_sha256", r.pin_sha256, "SHA-256 digests in hex (64 digits), separated by commas"
        )
    for attr in (
        "timeout_s",
        "backoff_base_s",
        "backoff_cap_s",
        "breaker_cooldown_s",
        "breaker_probe_initial_s",
    ):
        _positive(f"{key}.{attr}", getattr(r, attr))
    for attr in ("max_attempts", "concurrency", "breaker_threshold"):
        _positive(f"{key}.{attr}", getattr(r, attr))
    if r.breaker_probe_initial_s > r.breaker_cooldown_s:
        raise ConfigError(
            f"{key}.breaker_probe_initial_s",
            r.breaker_probe_initial_s,
            f"must not exceed {key}.breaker_cooldown_s ({r.breaker_cooldown_s}), the cap of the doubling",
        )


def _check(c: Config) -> None:
    for key, value in (
        ("store.batch_max", c.store.batch_max),
        ("store.retention_days", c.store.retention_days),
        ("store.retention_interval_s", c.store.retention_interval_s),
        ("store.pool_size", c.store.pool_size),
        ("store.statement_timeout_s", c.store.statement_timeout_s),
        ("store.lease_s", c.store.lease_s),
        ("store.outbox_lease_s", c.store.outbox_lease_s),
        ("store.decision_wait_s", c.store.decision_wait_s),
        ("mqtt.keepalive_s", c.mqtt.keepalive_s),
        ("mqtt.max_inflight", c.mqtt.max_inflight),
        ("mqtt.reconnect_min_s", c.mqtt.reconnect_min_s),
        ("mqtt.reconnect_max_s", c.mqtt.reconnect_max_s),
        ("mqtt.conflict_backoff_max_s", c.mqtt.conflict_backoff_max_s),
        ("http.max_body_bytes", c.http.max_body_bytes),
        ("http.provider_rate_per_s", c.http.provider_rate_per_s),
        ("http.provider_burst", c.http.provider_burst),
        ("http.ready_max_outbox_age_s", c.http.ready_max_outbox_age_s),
        ("http.read_timeout_s", c.http.read_timeout_s),
        ("http.max_sse_subscribers", c.http.max_sse_subscribers),
        ("pipeline.queue_size", c.pipeline.queue_size),
        ("pipeline.tick_interval_s", c.pipeline.tick_interval_s),
        ("pipeline.dedup_window", c.pipeline.dedup_window),
        ("pipeline.prune_interval_s", c.pipeline.prune_interval_s),
        ("drain_deadline_s", c.drain_deadline_s),
    ):
        _positive(key, value)
    if c.store.backend == "postgresql" and not c.store.dsn:
        raise ConfigError("store.dsn", "", "the postgresql backend needs a DSN (or ECALLGW_STORE__DSN)")
    if c.store.pool_size < 3:
        raise ConfigError("store.pool_size", c.store.pool_size, "needs at least 3 (writer, sequencer, reads)")
    if c.store.replica_id and not _NAME.match(c.store.replica_id):
        raise ConfigError("store.replica_id", c.store.replica_id, "replica ids are [A-Za-z0-9_-]{1,64}")
    if not c.store.checkpoint_interval_s >= 0:  # also refuses NaN
        raise ConfigError(
            "store.checkpoint_interval_s", c.store.checkpoint_interval_s, "must be 0 (automatic) or more"
        )
    # The journal must hold what a replay at start reads: the triage state's lifetime and one prune
    # interval (the triage table itself is validated where the policy is built).
    lifetime = c.triage.get("state_lifetime_s", 3600.0)
    if isinstance(lifetime, int | float) and not isinstance(lifetime, bool):
        needed = float(lifetime) + c.pipeline.prune_interval_s
        if c.store.retention_days * 86400.0 <= needed:
            raise ConfigError(
                "store.retention_days",
                c.store.retention_days,
                f"must be longer than triage.state_lifetime_s + pipeline.prune_interval_s ({needed:.0f} s)",
            )
    for key, port in (("mqtt.port", c.mqtt.port), ("http.port", c.http.port)):
        if not 0 <= port <= 65535:
            raise ConfigError(key, port, "a port is 0..65535")
    _check_http(c)
    _check_console(c)
    if c.mqtt.share_group and not _NAME.match(c.mqtt.share_group):
        raise ConfigError("mqtt.share_group", c.mqtt.share_group, "group names are [A-Za-z0-9_-]{1,64}")
    if c.mqtt.client_id and not _NAME.match(c.mqtt.client_id):
        raise ConfigError(
            "mqtt.client_id", c.mqtt.client_id, 'client ids are [A-Za-z0-9_-]{1,64} ("": derived per replica)'
        )
    mqtt_tls_files = {
        "mqtt.ca_file": c.mqtt.ca_file,
        "mqtt.cert_file": c.mqtt.cert_file,
        "mqtt.key_file": c.mqtt.key_file,
    }
    for key, path in mqtt_tls_files.items():
        if path and not c.mqtt.tls:  # never a silent plaintext link where files say TLS was meant
            raise ConfigError(key, path, "is set but mqtt.tls is false: set mqtt.tls = true")
        if path:
            try:
                with open(path, "rb"):
                    pass
            except OSError as exc:
                raise ConfigError(key, path, f"cannot read: {exc.strerror or exc}") from exc
    mqtt_used = c.mqtt.enabled or any(r.kind == "mqtt" for r in c.receivers.values())
    if mqtt_used and not c.mqtt.tls and not c.mqtt.allow_plaintext and not _is_loopback(c.mqtt.host):
        raise ConfigError(
            "mqtt.host",
            c.mqtt.host,
            "a broker beyond this host needs TLS: set mqtt.tls = true (or mqtt.allow_plaintext = true)",
        )
    if c.store.backend == "postgresql" and not c.store.allow_plaintext:
        host, sslmode = _dsn_host_and_sslmode(c.store.dsn.reveal())
        if host and not host.startswith("/") and not _is_loopback(host) and sslmode not in _VERIFIED:
            raise ConfigError(
                "store.dsn",
                f"<host {host}, sslmode {sslmode or 'unset'}>",
                "a server beyond this host needs a verified TLS link: add sslmode=verify-full and "
                "sslrootcert=... (or store.allow_plaintext = true)",
            )
    if bool(c.mqtt.cert_file) != bool(c.mqtt.key_file):
        missing, given = ("key_file", "cert_file") if c.mqtt.cert_file else ("cert_file", "key_file")
        raise ConfigError(f"mqtt.{missing}", "", f"mqtt.{given} is set: a client certificate needs its key")


def _check_console(c: Config) -> None:
    _positive("console.session_hours", c.console.session_hours)
    url = c.console.tile_url
    if url:
        parts = urllib.parse.urlsplit(url)
        secure = parts.scheme == "https" or (parts.scheme == "http" and _is_loopback(parts.hostname or ""))
        if not secure or not parts.hostname or any(t not in url for t in ("{z}", "{x}", "{y}")):
            raise ConfigError(
                "console.tile_url",
                url,
                "a tile URL template: https://host/.../{z}/{x}/{y}.png (http:// on loopback only)",
            )
    if len(c.console.tile_attribution) > 200:
        raise ConfigError(
            "console.tile_attribution", c.console.tile_attribution[:40], "at most 200 characters"
        )


def _positive(key: str, value: float) -> None:
    if not value > 0 or not math.isfinite(value):
        raise ConfigError(key, value, "must be a positive number")


def _check_http(c: Config) -> None:
    """HTTPS for the server: both files or neither; nothing but loopback in plaintext unless allowed."""
    h = c.http
    if bool(h.tls_cert_file) != bool(h.tls_key_file):
        missing = "tls_key_file" if h.tls_cert_file else "tls_cert_file"
        raise ConfigError(f"http.{missing}", "", "HTTPS needs both http.tls_cert_file and http.tls_key_file")
    if h.client_ca_file and not h.tls_cert_file:
        raise ConfigError(
            "http.client_ca_file", h.client_ca_file, "client certificates need HTTPS: set http.tls_cert_file"
        )
    if h.require_client_cert and not h.client_ca_file:
        raise ConfigError("http.require_client_cert", True, "needs http.client_ca_file")
    if h.enabled and not h.tls_cert_file and not h.allow_plaintext and not _is_loopback(h.host):
        raise ConfigError(
            "http.host",
            h.host,
            "not a loopback address: serve HTTPS (http.tls_cert_file, http.tls_key_file) "
            "or set http.allow_plaintext = true",
        )
    for i, tok in enumerate(c.auth.tokens):
        for attr in ("cert_cn", "cert_sha256"):
            if getattr(tok, attr) and not h.client_ca_file:
                raise ConfigError(
                    f"auth.tokens[{i}].{attr}",
                    getattr(tok, attr),
                    "client certificates need http.client_ca_file",
                )


_VERIFIED = frozenset({"verify-full", "verify-ca"})


def _dsn_host_and_sslmode(dsn: str) -> tuple[str, str]:
    """(first host, sslmode) of a libpq DSN, URL (``postgresql://…?sslmode=…``) or ``key=value`` form."""
    if "://" in dsn:
        parts = urllib.parse.urlsplit(dsn)
        query = urllib.parse.parse_qs(parts.query)
        netloc = parts.netloc.rpartition("@")[2]
        host = netloc.split(",")[0]
        host = host[1 : host.index("]")] if host.startswith("[") and "]" in host else host.rsplit(":", 1)[0]
        host = urllib.parse.unquote(host) or query.get("host", [""])[0]
        return host, query.get("sslmode", [""])[0]
    fields: dict[str, str] = {m[1]: m[2] for m in re.finditer(r"(\w+)\s*=\s*('[^']*'|\S+)", dsn)}
    return fields.get("host", "").strip("'").split(",")[0], fields.get("sslmode", "").strip("'")


def _is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost ("" and 0.0.0.0 are every interface)."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # any other name may resolve anywhere


def _is_sha256(text: str) -> bool:
    return re.fullmatch(r"[0-9a-f]{64}", text.strip().replace(":", "").lower()) is not None


def _build(cls: type[Any], raw: Mapping[str, Any], prefix: str) -> Any:
    """Instantiate dataclass ``cls`` from ``raw``, converting and checking every field."""
    if not isinstance(raw, Mapping):
        raise ConfigError(prefix or "<root>", raw, "must be a table")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        dotted = f"{prefix}.{key}" if prefix else key
        if key not in names:
            raise ConfigError(dotted, value, f"unknown key (known: {', '.join(sorted(names))})")
        kwargs[key] = _convert(hints[key], value, dotted)
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required key is missing
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in kwargs]
        raise ConfigError(f"{prefix}.{missing[0]}" if missing else prefix, None, "is required") from exc


def _convert(hint: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _build(hint, value, key)
    if origin is Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            raise ConfigError(key, value, f"must be one of {', '.join(map(repr, allowed))}")
        return value
    if hint is Secret:
        if isinstance(value, Secret):
            return value
        if not isinstance(value, str):
            raise ConfigError(key, "<secret>", "must be a string")
        return Secret(value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in {"1", "true", "yes", "on", "0", "false", "no", "off"}:
            return value.lower() in {"1", "true", "yes", "on"}
        raise ConfigError(key, value, "must be a boolean (true/false)")
    if hint is int:
        if isinstance(value, bool):
            raise ConfigError(key, value, "must be an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(key, value, "must be an integer")
    if hint is float:
        if isinstance(value, bool):
            raise ConfigError(key, value, "must be a number")
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(key, value, "must be a number")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(key, value, "must be a string")
    raise ConfigError(key, value, f"unsupported configuration type {hint!r}")  # pragma: no cover
