"""deploy/systemd/ecallgw.service: hardened, restarted always, and accepted by ``systemd-analyze``.

systemd-analyze is no dependency of ours (a CI container may lack it): its tests skip, saying so,
when it is missing. The unit's text is checked either way.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.promkit import DEPLOY

UNIT = DEPLOY / "systemd" / "ecallgw.service"
INSTALLED_BINARY = "/opt/ecallgw/bin/ecallgw"

needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed (package systemd): the unit is not verified here",
)


def _directives() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        m = re.match(r"^([A-Za-z]+)=(.*)$", line)
        if m is not None:
            out.setdefault(m.group(1), []).append(m.group(2).strip())
    return out


def _unit_with_our_binary(tmp_path: Path) -> Path:
    # The unit runs /opt/ecallgw/bin/ecallgw, which verify requires to exist: point it at this
    # venv's console script instead, changing nothing else.
    binary = Path(sys.executable).with_name("ecallgw")
    assert binary.exists(), binary
    text = UNIT.read_text()
    assert text.count(INSTALLED_BINARY) == 1
    copy = tmp_path / UNIT.name
    copy.write_text(text.replace(INSTALLED_BINARY, str(binary)))
    return copy


def _analyze(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=60,
        check=False,
    )


def test_unit_is_hardened_and_restarts() -> None:
    d = _directives()
    expected = {
        "DynamicUser": "yes",
        "StateDirectory": "ecallgw",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
        "CapabilityBoundingSet": "",
        "Restart": "always",
    }
    for key, value in expected.items():
        assert d.get(key) == [value], f"{key}={value}"
    assert d["RestrictAddressFamilies"] == ["AF_INET AF_INET6 AF_UNIX"]
    assert "@system-service" in d["SystemCallFilter"]
    # The store is where the unit may write; the secrets file reaches it as a credential.
    assert d["Environment"] == ["ECALLGW_STORE__PATH=/var/lib/ecallgw/ecallgw.sqlite3"]
    assert d["ExecStart"] == [f"{INSTALLED_BINARY} serve --config %d/gateway.toml"]
    assert d["LoadCredential"] == ["gateway.toml:/etc/ecallgw/gateway.toml"]
    # A refused configuration (exit 2) is not restarted in a loop; anything else always is.
    assert d["RestartPreventExitStatus"] == ["2"]
    assert d["StartLimitIntervalSec"] == ["0"]


@needs_systemd_analyze
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    result = _analyze("verify", _unit_with_our_binary(tmp_path))
    assert result.returncode == 0, result.stdout
    assert result.stdout.strip() == "", result.stdout


@needs_systemd_analyze
def test_systemd_analyze_verify_reports_a_broken_unit(tmp_path: Path) -> None:
    # The check above passes because the unit is right, not because verify accepts anything.
    unit = _unit_with_our_binary(tmp_path)
    unit.write_text(unit.read_text().replace("ProtectSystem=strict", "ProtectSystem=stricter"))
    result = _analyze("verify", unit)
    # (a value it cannot parse is a warning with exit status 0: hence the empty output required above)
    assert "stricter" in result.stdout, result.stdout


@needs_systemd_analyze
def test_exposure_stays_low(tmp_path: Path) -> None:
    # systemd's own score of the sandbox, 0 best to 10 worst (1.3 as written); --threshold counts
    # tenths: 20 is 2.0.
    result = _analyze("security", "--offline=true", "--threshold=20", _unit_with_our_binary(tmp_path))
    if "--offline" in result.stdout and "unrecognized" in result.stdout:
        pytest.skip("this systemd-analyze has no --offline (systemd < 250)")
    assert result.returncode == 0, result.stdout[-2000:]
