"""The runnable blocks of the README and of the documentation site, as data: commands in order,
each with the output it documents.

A fenced block says what it is in its title (`title="..."` after the language, as MkDocs
Material renders it):
- `title="run"`: commands that run as written, in order; each becomes one `Step` (continuation
  lines joined, full-line comments dropped). A comment line `#> TEXT` right under a command is
  output it documents: some line of the command's output must match TEXT, where `...` stands
  for any text.
- a file name (`title="train.py"`, `title="feature_repo/feature_store.yaml"`): a file the reader
  saves; a step writes it.
- `title="illustration"`: the shape of a command with the reader's own tables, hosts or clusters;
  never run.
A command block (bash, sh, console, python or no language) without one of these is unmarked,
which `unmarked_blocks` reports. `WALK` is the order the walk reads the pages in: the README's tour
first (it starts from an empty folder), then the pages that continue from the folder and server it
leaves.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
DOCS = REPO / "docs"
WALK = (
    "README.md",
    "docs/export-import.md",
    "docs/serving.md",
    "docs/features.md",
    "docs/training.md",
    "docs/versions.md",
    "docs/traffic.md",
)
"""Pages with runnable blocks, in the order the walk runs them (one folder, one shell)."""
FENCE = re.compile(r"^```([\w-]*)([^\n]*)\n(.*?)^```[ \t]*\n", re.MULTILINE | re.DOTALL)
TITLE = re.compile(r'title="([^"]+)"')
RUN, ILLUSTRATION = "run", "illustration"
COMMAND_LANGUAGES = frozenset({"", "bash", "sh", "shell", "console", "python", "py"})
FILE_NAME = re.compile(r"^[\w./-]+\.\w+$")


@dataclass
class Step:
    """One command of a page (or a file it has the reader save), and what it should print."""

    page: str
    command: str
    expected: list[str] = field(default_factory=list)
    """`#> TEXT` lines documented under it."""
    file: str | None = None
    """Set for a block titled with a file name: the path it is saved as; `command` holds its text."""

    def matches(self, output: str) -> list[str]:
        """The documented lines no line of `output` matches."""
        lines = output.splitlines()
        return [text for text in self.expected if not any(pattern(text).search(line) for line in lines)]


@dataclass(frozen=True)
class Block:
    language: str
    title: str | None
    body: str
    line: int
    """1-based line of the opening fence."""


def pattern(text: str) -> re.Pattern[str]:
    """`TEXT` with `...` standing for any text (and nothing else special)."""
    return re.compile(".*?".join(re.escape(part.strip()) for part in text.split("...")))


def blocks(markdown: str) -> list[Block]:
    """Every fenced block of a page, with its language and title."""
    found = []
    for match in FENCE.finditer(markdown):
        title = TITLE.search(match.group(2))
        line = markdown.count("\n", 0, match.start()) + 1
        found.append(Block(match.group(1), title.group(1) if title else None, match.group(3), line))
    return found


def unmarked_blocks(markdown: str) -> list[Block]:
    """Command blocks marked neither runnable, nor a file to save, nor an illustration."""
    return [
        b
        for b in blocks(markdown)
        if b.language in COMMAND_LANGUAGES
        and not (b.title in (RUN, ILLUSTRATION) or (b.title is not None and FILE_NAME.match(b.title)))
    ]


def page_steps(markdown: str, page: str) -> list[Step]:
    """The steps of one page, in its order."""
    steps: list[Step] = []
    for block in blocks(markdown):
        if block.title == RUN:
            steps.extend(_commands(page, block.body))
        elif block.title is not None and FILE_NAME.match(block.title):
            steps.append(Step(page, block.body, file=block.title))
    return steps


def tour_steps() -> list[Step]:
    """Every step of the walked pages, in `WALK` order."""
    return [step for page in WALK for step in page_steps((REPO / page).read_text(), page)]


def _commands(page: str, body: str) -> list[Step]:
    """One step per command: lines ending in a backslash, or inside an open quote, continue it."""
    steps: list[Step] = []
    pending = ""
    for raw in body.splitlines():
        line = raw.rstrip()
        stripped = line.strip()
        if not pending:
            if stripped.startswith("#>"):
                if not steps:
                    raise ValueError(f"{page}: '{stripped}' documents the output of no command")
                steps[-1].expected.append(stripped[2:].strip())
                continue
            if not stripped or stripped.startswith("#"):
                continue
        pending = f"{pending}\n{line}" if pending else line
        if not line.endswith("\\") and _complete(pending):
            steps.append(Step(page, pending))
            pending = ""
    if pending:
        raise ValueError(f"{page}: unfinished command {pending!r}")
    return steps


def _complete(command: str) -> bool:
    """No quote left open (the shell would read on)."""
    try:
        shlex.split(command, comments=True)
    except ValueError:
        return False
    return True
