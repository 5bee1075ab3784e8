"""deploy/Containerfile, read as text: no container runtime is needed by the tests.

The image is not built here; these checks hold it to what deploy/README.md promises: python:3.11-slim,
the package installed from the repository with pip (PyPI only), a non-root user, the store on a
volume, and a build context of exactly the files the COPY lines name.
"""

from __future__ import annotations

import re

from tests.deploy.promkit import DEPLOY, REPO

CONTAINERFILE = DEPLOY / "Containerfile"


def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", CONTAINERFILE.read_text())
    out = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_based_on_python_311_slim() -> None:
    froms = [rest for word, rest in _instructions() if word == "FROM"]
    assert froms and all(f.split()[0] == "python:3.11-slim" for f in froms)


def test_runs_as_a_non_root_user() -> None:
    users = [rest for word, rest in _instructions() if word == "USER"]
    assert users, "no USER: the image would run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0


def test_installs_from_the_repository_with_pip_and_pypi_only() -> None:
    runs = " ".join(rest for word, rest in _instructions() if word == "RUN")
    assert "pip install /src" in runs
    for forbidden in ("apt-get", "curl ", "wget ", "--index-url", "--extra-index-url", "pip install -e"):
        assert forbidden not in runs, forbidden


def test_copies_what_pip_needs_and_nothing_else() -> None:
    sources = []
    for word, rest in _instructions():
        if word == "COPY" and not rest.startswith("--from"):
            sources.extend(rest.split()[:-1])
    assert set(sources) == {"pyproject.toml", "README.md", "ecallgw"}
    for source in sources:
        assert (REPO / source).exists(), source
    # pyproject names README.md as the readme: a build without it fails.
    assert 'readme = "README.md"' in (REPO / "pyproject.toml").read_text()
    ignore = (DEPLOY / "Containerfile.dockerignore").read_text().split()
    assert ignore[ignore.index("*") :][:4] == ["*", "!pyproject.toml", "!README.md", "!ecallgw"]


def test_serves_with_the_store_on_a_volume() -> None:
    inst = dict(_instructions())
    assert inst["ENTRYPOINT"] == '["/opt/ecallgw/bin/ecallgw"]'
    assert inst["CMD"].startswith('["serve"')
    assert "/var/lib/ecallgw" in inst["VOLUME"]
    assert "ECALLGW_STORE__PATH=/var/lib/ecallgw/ecallgw.sqlite3" in inst["ENV"].split()
