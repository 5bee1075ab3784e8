"""The console's assets ship in the wheel: every file the page needs matches pyproject's package-data."""

from __future__ import annotations

import tomllib
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).parents[2]


def test_every_console_asset_is_package_data() -> None:
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][
        "ecallgw"
    ]
    package = ROOT / "ecallgw"
    assets = [
        p
        for p in (package / "console").rglob("*")
        if p.is_file() and p.suffix != ".py" and "__pycache__" not in p.parts
    ]
    assert len(assets) > 10
    for asset in assets:
        rel = PurePosixPath(asset.relative_to(package).as_posix())
        # setuptools' globs: "**" spans folders, "*" does not.
        ok = any(rel.match(p[3:] if p.startswith("**/") else p) for p in patterns)
        assert ok, f"{rel} is not in [tool.setuptools.package-data]"
