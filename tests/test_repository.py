"""The repository stands alone: a stranger's clone holds every file its tests and docs need."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import DATA, DATA_FILES, ROOT

# Built from parts so that this file does not match itself.
OUTSIDE = re.compile(
    "|".join(
        (
            r"\.\./" + "shared",
            "/work" + "/",
            r"parent\s*/\s*['\"]" + "shared",
            r"\.parent\.parent\.parent",
        )
    )
)


def git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=120
    ).stdout


@pytest.mark.unit
def test_the_data_manifest_is_what_is_on_disk() -> None:
    on_disk = sorted(str(p.relative_to(DATA)) for p in DATA.rglob("*.json"))
    assert on_disk == sorted(DATA_FILES)
    assert (DATA / "README.md").read_text().count("MIT-0") >= 1


@pytest.mark.integration
def test_no_tracked_file_refers_outside_the_repository() -> None:
    offenders = []
    for name in git("ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0"):
        path = ROOT / name
        if not name or name == "uv.lock" or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        offenders += [
            f"{name}:{number}: {line.strip()[:120]}"
            for number, line in enumerate(text.splitlines(), 1)
            if OUTSIDE.search(line)
        ]
    assert not offenders, "\n".join(offenders)


def _collected(folder: Path) -> tuple[int, str]:
    """How many tests pytest collects in a checkout, and its output."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=folder,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    found = re.search(r"^(\d+) tests? collected", result.stdout, re.MULTILINE)
    assert result.returncode == 0 and found, result.stdout[-3000:] + result.stderr[-3000:]
    return int(found.group(1)), result.stdout


@pytest.mark.integration
def test_a_clone_with_no_siblings_collects_the_same_suite(tmp_path: Path) -> None:
    """``git clone`` into an empty folder: the same tests, none lost to missing files.

    CI runs on a clean clone, where HEAD is the working tree. At a developer's desk the
    clone is moved to a commit of the working tree as it would be committed (tracked and
    untracked, .gitignore honoured), made with a scratch index so nothing is changed here.
    """
    clone = tmp_path / "alone" / "wait-times"
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    git("clone", "-q", "--no-hardlinks", str(ROOT), str(clone), cwd=tmp_path)
    if git("status", "--porcelain"):
        index = scratch / "index"
        env_git = ["-c", "core.hooksPath=/dev/null"]
        subprocess.run(
            ["git", *env_git, "add", "-A"],
            cwd=ROOT,
            env={"GIT_INDEX_FILE": str(index), "PATH": "/usr/bin:/bin"},
            check=True,
        )
        tree = subprocess.run(
            ["git", "write-tree"],
            cwd=ROOT,
            env={"GIT_INDEX_FILE": str(index), "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        commit = git("commit-tree", tree, "-p", "HEAD", "-m", "working tree").strip()
        git("fetch", "-q", str(ROOT), commit, cwd=clone)
        git("checkout", "-q", commit, cwd=clone)
    assert [p.name for p in clone.parent.iterdir()] == ["wait-times"]
    here, _ = _collected(ROOT)
    there, listing = _collected(clone)
    assert there == here, listing[-3000:]
    assert "skipped" not in listing
