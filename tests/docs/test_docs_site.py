"""The documentation site builds strictly: a broken link or anchor, a page missing from the nav,
a nav entry without its page, each fails the build (mkdocs.yml's `validation`, `strict: true`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from load_tests.server_process import REPO_ROOT


def _build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config), "--site-dir", str(site)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    done = _build(REPO_ROOT / "mkdocs.yml", tmp_path / "site")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "site" / "index.html").is_file() and (tmp_path / "site" / "glossary" / "index.html").is_file()


def test_a_broken_link_or_a_page_left_out_of_the_nav_fails_the_build(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text("# home\n\nSee [the missing page](missing.md).\n")
    (docs / "orphan.md").write_text("# not in the nav\n")
    config = tmp_path / "mkdocs.yml"
    text = (REPO_ROOT / "mkdocs.yml").read_text()
    config.write_text(text[: text.index("\nnav:")] + "\nnav:\n  - Home: index.md\n")
    done = _build(config, tmp_path / "site")
    assert done.returncode != 0
    assert "missing.md" in done.stderr and "orphan.md" in done.stderr
