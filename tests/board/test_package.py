"""The board's assets are package data: the wheel the image installs carries them."""

from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.integration
UV = ROOT / ".tools" / "uv" / "bin" / "uv"  # dev.py installs it


def test_the_wheel_ships_the_boards_page_script_and_style_sheet(tmp_path: Path) -> None:
    assert UV.exists(), f"{UV} is missing: run python3 dev.py first"
    built = subprocess.run(
        [str(UV), "build", "--wheel", "-q", "-o", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assets = {p.name for p in (ROOT / "service" / "board" / "static").iterdir()}
    assert {f"service/board/static/{name}" for name in assets} <= names
