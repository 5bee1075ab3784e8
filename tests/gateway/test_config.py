"""Configuration layers, conversion and the errors that name key and value."""

from __future__ import annotations

from pathlib import Path

import pytest

from ecallgw.config import Config, ReceiverConfig, Secret, load_config
from ecallgw.errors import ConfigError

TOKEN = "p" * 20


def test_embedded_defaults_need_no_file() -> None:
    config = load_config()
    assert config.store == Config().store and config.http == Config().http
    # Triage's default receiver names all exist, so `serve` starts with no file.
    assert {n: r.kind for n, r in config.receivers.items()} == {
        "operator": "operator",
        "test": "operator",
        "psap-fallback": "mqtt",
    }
    assert config.store.synchronous == "full"
    assert config.mqtt.port == 1883


def test_layers_file_then_env_then_flags(tmp_path: Path) -> None:
    f = tmp_path / "gw.toml"
    f.write_text(
        '[mqtt]\nport = 1884\nhost = "broker"\nallow_plaintext = true\n[http]\nport = 9000\n'
        '[receivers.psap]\nurl = "http://127.0.0.1:1/in"\nformat = "cap"\n'
        "[triage]\nsome_threshold = 3\n"
    )
    env = {"ECALLGW_MQTT__PORT": "1885", "ECALLGW_HTTP__PORT": "9001", "OTHER": "x"}
    config = load_config(f, environ=env, overrides={"http.port": "9002"})
    assert config.mqtt.host == "broker"  # file
    assert config.mqtt.port == 1885  # env beats file
    assert config.http.port == 9002  # flag beats env
    assert config.receivers["psap"].format == "cap"
    assert config.receivers["psap"].name == "psap"
    assert set(config.receivers) == {"psap", "operator", "test", "psap-fallback"}
    assert dict(config.triage) == {"some_threshold": 3}


def test_triage_values_from_env_and_flags_are_toml_literals() -> None:
    env = {"ECALLGW_TRIAGE__ESCALATION_DELAY_S": "30", "ECALLGW_TRIAGE__OPERATOR_RECEIVER": "desk"}
    config = load_config(environ=env, overrides={"triage.asi15_high": "1500", "triage.storm_factor": "2.5"})
    assert dict(config.triage) == {
        "escalation_delay_s": 30,
        "operator_receiver": "desk",
        "asi15_high": 1500,
        "storm_factor": 2.5,
    }


def test_env_addresses_receivers_and_booleans() -> None:
    env = {
        "ECALLGW_RECEIVERS__DESK__URL": "http://127.0.0.1:9/x",
        "ECALLGW_RECEIVERS__DESK__MAX_ATTEMPTS": "3",
        "ECALLGW_MQTT__ENABLED": "false",
    }
    config = load_config(environ=env)
    assert config.receivers["desk"].max_attempts == 3
    assert config.mqtt.enabled is False


@pytest.mark.parametrize(
    ("overrides", "key", "value"),
    [
        ({"mqtt.port": "eighty"}, "mqtt.port", "eighty"),  # not an integer
        ({"mqtt.port": "70000"}, "mqtt.port", 70000),  # out of range
        ({"store.synchronous": "off"}, "store.synchronous", "off"),  # not an allowed value
        ({"store.batch_max": "0"}, "store.batch_max", 0),  # must be positive
        ({"mqtt.nonsense": "1"}, "mqtt.nonsense", "1"),  # unknown key: typos must not pass silently
        ({"receivers.psap.url": "ftp://x"}, "receivers.psap.url", "ftp://x"),  # webhook needs http(s)
        ({"mqtt.enabled": "maybe"}, "mqtt.enabled", "maybe"),  # not a boolean
        ({"receivers.bad name.url": "http://x"}, "receivers.bad name", "bad name"),  # name not a label
        ({"store.checkpoint_interval_s": "-1"}, "store.checkpoint_interval_s", -1.0),  # 0 or more
    ],
    ids=["int", "port-range", "literal", "positive", "unknown", "url", "bool", "receiver-name", "checkpoint"],
)
def test_errors_name_key_and_value(overrides: dict[str, str], key: str, value: object) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(overrides=overrides)
    assert info.value.key == key
    assert info.value.value == value
    assert repr(key) in str(info.value)


def test_bad_toml_and_missing_file_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[mqtt\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")


def test_tokens_are_secrets_and_checked(tmp_path: Path) -> None:
    f = tmp_path / "gw.toml"
    f.write_text(
        f'[[auth.tokens]]\nname = "acme"\nrole = "provider"\ntps = "acme"\ntoken = "{TOKEN}"\n'
        f'[[auth.tokens]]\nname = "alice"\nrole = "operator"\ntoken = "{"o" * 20}"\n'
    )
    config = load_config(f)
    tok = config.auth.tokens[0]
    assert isinstance(tok.token, Secret)
    assert TOKEN not in repr(config)
    assert tok.token.matches(TOKEN)
    assert not tok.token.matches(TOKEN + "x")
    f.write_text(f'[[auth.tokens]]\nname = "acme"\nrole = "provider"\ntoken = "{TOKEN}"\n')
    with pytest.raises(ConfigError) as info:
        load_config(f)
    assert info.value.key == "auth.tokens[0].tps"
    f.write_text('[[auth.tokens]]\nname = "x"\nrole = "sre"\ntoken = "short"\n')
    with pytest.raises(ConfigError) as info:
        load_config(f)
    assert info.value.key == "auth.tokens[0].token"
    assert "short" not in str(info.value)  # the rejected secret is not echoed
    f.write_text(f'[[auth.tokens]]\nname = "x"\nrole = "root"\ntoken = "{TOKEN}"\n')
    with pytest.raises(ConfigError) as info:
        load_config(f)
    assert info.value.key == "auth.tokens[0].role"


def test_secret_masks_and_compares() -> None:
    s = Secret("hunter2hunter2hunter2")
    assert "hunter2" not in repr(s)
    assert "hunter2" not in str(s)
    assert f"{s}" == repr(s)
    assert s.reveal() == "hunter2hunter2hunter2"
    assert s == Secret("hunter2hunter2hunter2")
    assert not Secret("")


def test_retention_must_outlast_the_triage_state() -> None:
    # Replay at start reads the journal back over the state's lifetime and one prune interval.
    base = {"triage": {"state_lifetime_s": 7200.0}, "pipeline": {"prune_interval_s": 600.0}}
    with pytest.raises(ConfigError) as info:
        load_config(base={**base, "store": {"retention_days": 0.05}})  # 4320 s
    assert info.value.key == "store.retention_days"
    assert "triage.state_lifetime_s" in str(info.value) and "pipeline.prune_interval_s" in str(info.value)
    assert load_config(base={**base, "store": {"retention_days": 0.1}}).store.retention_days == 0.1


def test_breaker_probe_initial_is_validated_against_the_cap() -> None:
    config = load_config(base={})
    assert all(
        (r.breaker_probe_initial_s, r.breaker_cooldown_s) == (1.0, 10.0) for r in config.receivers.values()
    )
    table = {"kind": "http", "url": "http://127.0.0.1:9/x"}
    with pytest.raises(ConfigError) as info:
        load_config(base={"receivers": {"p": {**table, "breaker_probe_initial_s": 12.0}}})
    assert info.value.key == "receivers.p.breaker_probe_initial_s" and info.value.value == 12.0
    assert "breaker_cooldown_s" in str(info.value)
    with pytest.raises(ConfigError) as info:
        load_config(base={"receivers": {"p": {**table, "breaker_probe_initial_s": 0}}})
    assert info.value.key == "receivers.p.breaker_probe_initial_s"
    ok = load_config(
        base={"receivers": {"p": {**table, "breaker_probe_initial_s": 0.5, "breaker_cooldown_s": 0.5}}}
    )
    assert ok.receivers["p"].breaker_probe_initial_s == 0.5


def test_env_receiver_with_underscore_names_the_existing_dashed_one(tmp_path: Path) -> None:
    # A shell cannot export ECALLGW_RECEIVERS__PSAP-FALLBACK__URL: `_` stands for `-` here.
    env = {
        "ECALLGW_RECEIVERS__PSAP_FALLBACK__KIND": "http",
        "ECALLGW_RECEIVERS__PSAP_FALLBACK__URL": "http://127.0.0.1:9/in",
    }
    config = load_config(environ=env)
    assert set(config.receivers) == {"operator", "test", "psap-fallback"}  # no new psap_fallback
    assert config.receivers["psap-fallback"].url == "http://127.0.0.1:9/in"
    # The dashed spelling (systemd, Docker, `env '…'`) names it too.
    dashed = {k.replace("PSAP_FALLBACK", "PSAP-FALLBACK"): v for k, v in env.items()}
    assert load_config(environ=dashed).receivers == config.receivers
    # A receiver spelled exactly so wins; both spellings present is refused, naming the variable.
    f = tmp_path / "gw.toml"
    f.write_text('[receivers.psap_fallback]\nurl = "http://127.0.0.1:9/other"\n')
    config = load_config(f, environ={"ECALLGW_RECEIVERS__PSAP_FALLBACK__MAX_ATTEMPTS": "3"})
    assert config.receivers["psap_fallback"].max_attempts == 3
    assert config.receivers["psap-fallback"].max_attempts == ReceiverConfig(name="x").max_attempts
    # A name in the file with upper case or `-` is found too; two that fit one spelling are refused.
    f.write_text('[receivers.Psap-North]\nurl = "http://127.0.0.1:9/n"\n')
    config = load_config(f, environ={"ECALLGW_RECEIVERS__PSAP_NORTH__MAX_ATTEMPTS": "3"})
    assert set(config.receivers) == {"operator", "test", "psap-fallback", "Psap-North"}
    assert config.receivers["Psap-North"].max_attempts == 3
    f.write_text('[receivers.psap-n]\nurl = "http://127.0.0.1:9/n"\n[receivers.psap-N]\nkind = "mqtt"\n')
    with pytest.raises(ConfigError, match="both match") as info:
        load_config(f, environ={"ECALLGW_RECEIVERS__PSAP_N__URL": "http://127.0.0.1:9/x"})
    assert info.value.key == "ECALLGW_RECEIVERS__PSAP_N__URL"


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("ECALLGW_MQTT__PROT", "mqtt has no key 'prot'"),
        ("ECALLGW_STORE_DSN", "no section 'store_dsn'"),
        ("ECALLGW_HTTP__PORT__X", "the form is ECALLGW_HTTP__<KEY>"),
        ("ECALLGW_", "the form is ECALLGW_SECTION__KEY"),
        ("ECALLGW_MQTT____PORT", "the form is ECALLGW_SECTION__KEY"),
        ("ECALLGW_TRIAGE__ESCALATION_DELAY", "triage has no key 'escalation_delay'"),
        ("ECALLGW_RECEIVERS__DESK__URI", "receivers.<name> has no key 'uri'"),
        ("ECALLGW_AUTH__TOKEN__ACME__TOKEN", "the form is ECALLGW_AUTH__TOKENS__<NAME>__<KEY>"),
    ],
)
def test_an_env_variable_naming_no_key_is_an_error_naming_it(name: str, why: str) -> None:
    secret = "postgresql://gw:hunter2@db/gw"
    with pytest.raises(ConfigError) as info:
        load_config(environ={name: secret, "UNRELATED": "x"})
    assert info.value.key == name
    assert why in str(info.value) and "names no configuration key" in str(info.value)
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"mqtt.host": "broker.example"}, "mqtt.host"),
        (
            {"mqtt.host": "10.0.0.7", "mqtt.enabled": "false", "receivers.psap-fallback.kind": "mqtt"},
            "mqtt.host",
        ),
        (
            {"store.backend": "postgresql", "store.dsn": "postgresql://gw:pw@db.example:5432/ecallgw"},
            "store.dsn",
        ),
        (
            {
                "store.backend": "postgresql",
                "store.dsn": "postgresql://gw@db.example/ecallgw?sslmode=require",
            },
            "store.dsn",
        ),
        (
            {"store.backend": "postgresql", "store.dsn": "host=10.1.2.3 dbname=ecallgw sslmode=prefer"},
            "store.dsn",
        ),
    ],
)
def test_a_link_beyond_this_host_without_verified_tls_is_refused(overrides: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(overrides=overrides)
    assert err.value.key == key
    assert "pw" not in str(err.value)  # a DSN's password never reaches the message


@pytest.mark.parametrize(
    "overrides",
    [
        {"mqtt.host": "localhost"},
        {"mqtt.host": "::1"},
        {"mqtt.host": "broker.example", "mqtt.tls": "true"},
        {"mqtt.host": "broker.example", "mqtt.allow_plaintext": "true"},
        {"store.backend": "postgresql", "store.dsn": "postgresql://gw@127.0.0.1:5432/ecallgw"},
        {"store.backend": "postgresql", "store.dsn": "postgresql:///ecallgw?host=/var/run/postgresql"},
        {
            "store.backend": "postgresql",
            "store.dsn": "postgresql://gw@db.example/ecallgw?sslmode=verify-full&sslrootcert=/etc/ca.pem",
        },
        {
            "store.backend": "postgresql",
            "store.dsn": "postgresql://gw@db.example/e",
            "store.allow_plaintext": "true",
        },
    ],
)
def test_loopback_verified_tls_or_an_explicit_allowance_starts(overrides: dict[str, str]) -> None:
    load_config(overrides=overrides)


@pytest.mark.parametrize(
    ("attr", "value", "known"),
    [("format", "xml", "'json', 'cap', 'eido'"), ("kind", "smtp", "'http', 'mqtt', 'operator'")],
)
def test_an_unknown_format_or_kind_is_one_line_naming_the_registered_ones(
    attr: str, value: str, known: str
) -> None:
    overrides = {"receivers.psap.url": "http://127.0.0.1:1/in", f"receivers.psap.{attr}": value}
    with pytest.raises(ConfigError) as info:
        load_config(overrides=overrides)
    assert (info.value.key, info.value.value) == (f"receivers.psap.{attr}", value)
    assert str(info.value) == f"config 'receivers.psap.{attr}' has value {value!r}: must be one of {known}"


def test_every_registered_format_is_accepted() -> None:
    from ecallgw.codecs.renderers import FORMATS

    for name in FORMATS:
        config = load_config(
            overrides={"receivers.psap.url": "http://127.0.0.1:1/in", "receivers.psap.format": name}
        )
        assert config.receivers["psap"].format == name
