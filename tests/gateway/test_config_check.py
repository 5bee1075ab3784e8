"""``ecallgw config check FILE``: serve's start-up checks, nothing started, no secret printed."""

from __future__ import annotations

from pathlib import Path

import pytest

from ecallgw.cli import main
from tests.tlskit import make_pki

TOKEN = "s3cret-provider-token-0123"


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("ECALLGW_"):
            monkeypatch.delenv(name)


def _write(tmp_path: Path, text: str) -> Path:
    f = tmp_path / "gw.toml"
    f.write_text(text)
    return f


def test_ok_prints_a_summary_without_secrets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "store" / "gw.sqlite3"
    f = _write(
        tmp_path,
        f'[store]\npath = "{store}"\n'
        '[receivers.psap]\nurl = "http://127.0.0.1:9/in"\ntoken = "receiver-token-abcdefgh"\n'
        f'[[auth.tokens]]\nname = "acme"\nrole = "provider"\ntps = "acme"\ntoken = "{TOKEN}"\n'
        '[[auth.tokens]]\nname = "desk"\nrole = "operator"\ntoken = "operator-token-0123456789"\n',
    )
    assert main(["config", "check", str(f)]) == 0
    out = capsys.readouterr()
    assert out.err == ""
    assert out.out.count("\n") == 1 and out.out.startswith("ok: store sqlite ")
    assert "psap(http)" in out.out and "tokens 2" in out.out
    assert TOKEN not in out.out and "receiver-token" not in out.out and "operator-token" not in out.out
    assert not store.parent.exists()  # nothing opened, nothing created


def test_postgresql_dsn_is_never_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ECALLGW_STORE__DSN", "postgresql://gw:hunter2@127.0.0.1:1/gw")
    f = _write(tmp_path, '[store]\nbackend = "postgresql"\n')
    assert main(["config", "check", str(f)]) == 0
    out = capsys.readouterr().out
    assert "hunter2" not in out and "ok: store postgresql;" in out and "ECALLGW_STORE__DSN" in out


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[mqtt]\nport = 70000\n", "'mqtt.port'"),
        ("[mqtt]\nbogus = 1\n", "'mqtt.bogus'"),
        ("[triage]\nnot_a_threshold = 1\n", "'triage.not_a_threshold'"),
        ('[triage]\noperator_receiver = "desk"\n', "'receivers.desk'"),
        (
            '[http]\ntls_cert_file = "/nonexistent/cert.pem"\ntls_key_file = "/nonexistent/key.pem"\n',
            "'http.tls_cert_file'",
        ),
        ('[mqtt]\ntls = true\nca_file = "/nonexistent/ca.pem"\n', "'mqtt.ca_file'"),
        (
            '[[auth.tokens]]\nname = "x"\nrole = "operator"\ntoken = "short-secret"\n',
            "'auth.tokens[0].token'",
        ),
    ],
)
def test_a_bad_key_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, key: str
) -> None:
    assert main(["config", "check", str(_write(tmp_path, text))]) == 2
    out = capsys.readouterr()
    assert out.out == "" and out.err.count("\n") == 1 and key in out.err
    assert "short-secret" not in out.err


def test_tls_files_are_loaded_not_just_found(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pki = make_pki(tmp_path / "pki")
    good = (
        f'[http]\ntls_cert_file = "{pki.server.cert}"\ntls_key_file = "{pki.server.key}"\n'
        f'client_ca_file = "{pki.ca}"\n'
        f'[receivers.psap]\nurl = "https://127.0.0.1:9/in"\nca_file = "{pki.ca}"\n'
        f'cert_file = "{pki.client.cert}"\nkey_file = "{pki.client.key}"\n'
    )
    assert main(["config", "check", str(_write(tmp_path, good))]) == 0
    assert "http 127.0.0.1:8080 tls" in capsys.readouterr().out
    # A key that is not the certificate's: the file exists, but serve could not load it.
    bad = good.replace(f'tls_key_file = "{pki.server.key}"', f'tls_key_file = "{pki.client.key}"')
    assert main(["config", "check", str(_write(tmp_path, bad))]) == 2
    assert "'http.tls_cert_file'" in capsys.readouterr().err
    not_a_ca = good.replace(f'ca_file = "{pki.ca}"\ncert_file', f'ca_file = "{pki.server.key}"\ncert_file')
    assert main(["config", "check", str(_write(tmp_path, not_a_ca))]) == 2
    assert "'receivers.psap.ca_file'" in capsys.readouterr().err


def test_set_overrides_apply(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = _write(tmp_path, "")
    assert main(["config", "check", str(f), "--set", "http.port=9123"]) == 0
    assert "http 127.0.0.1:9123" in capsys.readouterr().out
    assert main(["config", "check", str(f), "--set", "http.port=x"]) == 2


def test_an_env_variable_naming_no_key_is_refused_by_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ECALLGW_STORE_DSN", "postgresql://gw:hunter2@db/gw")  # one `_` short
    assert main(["config", "check", str(_write(tmp_path, ""))]) == 2
    err = capsys.readouterr().err
    assert "'ECALLGW_STORE_DSN'" in err and "names no configuration key" in err and "hunter2" not in err
    monkeypatch.delenv("ECALLGW_STORE_DSN")
    monkeypatch.setenv("ECALLGW_RECEIVERS__PSAP_FALLBACK__KIND", "http")
    monkeypatch.setenv("ECALLGW_RECEIVERS__PSAP_FALLBACK__URL", "http://127.0.0.1:9/in")
    assert main(["config", "check", str(_write(tmp_path, ""))]) == 0
    assert "psap-fallback(http)" in capsys.readouterr().out


def test_the_example_configuration_checks(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    example = str(Path(__file__).resolve().parents[2] / "examples" / "gateway.toml")
    # Its tokens come from the environment: without them, refused naming the key.
    assert main(["config", "check", example]) == 2
    assert "auth.tokens[0].token" in capsys.readouterr().err
    for name in ("ACME", "DESK", "SRE"):
        monkeypatch.setenv(f"ECALLGW_AUTH__TOKENS__{name}__TOKEN", f"{name.lower()}-example-token-000000")
    assert main(["config", "check", example]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok: store sqlite ") and "tokens 3" in out and "psap-fallback(http)" in out
    assert "example-token" not in out
