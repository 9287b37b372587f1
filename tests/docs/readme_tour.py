"""The README's tour as data: its fenced commands, in order, with the output each documents.

Read from the sections a new user walks (`TOUR_SECTIONS`): every ```bash block becomes one
`Step` per command (continuation lines joined, full-line comments dropped), and a ```python
block whose first line is `# NAME.py: ...` becomes a step that writes that file. A comment line
`#> TEXT` right under a command is output it documents: some line of the command's output must
match TEXT, where `...` stands for any text.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
TOUR_SECTIONS = (
    "A short tour",
    "Swap versions while traffic flows",
    "Canary, shadow and one routing for the fleet",
)
FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.MULTILINE | re.DOTALL)
WRITES_FILE = re.compile(r"^# (\S+\.py): ")


@dataclass
class Step:
    """One command of the tour (or a file it writes), where it stands and what it should print."""

    section: str
    command: str
    expected: list[str] = field(default_factory=list)
    """`#> TEXT` lines documented under it."""
    file: str | None = None
    """Set for a ```python block: the file name it is saved as; `command` holds its text."""

    def matches(self, output: str) -> list[str]:
        """The documented lines no line of `output` matches."""
        lines = output.splitlines()
        return [text for text in self.expected if not any(pattern(text).search(line) for line in lines)]


def pattern(text: str) -> re.Pattern[str]:
    """`TEXT` with `...` standing for any text (and nothing else special)."""
    return re.compile(".*?".join(re.escape(part.strip()) for part in text.split("...")))


def sections(markdown: str) -> dict[str, str]:
    """`## heading` -> the text under it, up to the next `## ` heading."""
    parts = re.split(r"^## (.+)$", markdown, flags=re.MULTILINE)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def tour_steps(markdown: str | None = None) -> list[Step]:
    """Every step of the tour sections, in the README's order."""
    text = README.read_text() if markdown is None else markdown
    found = sections(text)
    steps: list[Step] = []
    for name in TOUR_SECTIONS:
        if name not in found:
            raise ValueError(f"README.md has no section '## {name}'")
        for language, body in FENCE.findall(found[name]):
            if language == "python":
                written = WRITES_FILE.match(body)
                if written:
                    steps.append(Step(name, body, file=written.group(1)))
            elif language == "bash":
                steps.extend(_commands(name, body))
    return steps


def _commands(section: str, body: str) -> list[Step]:
    """One step per command: lines ending in a backslash, or inside an open quote, continue it."""
    steps: list[Step] = []
    pending = ""
    for raw in body.splitlines():
        line = raw.rstrip()
        stripped = line.strip()
        if not pending:
            if stripped.startswith("#>"):
                if not steps:
                    raise ValueError(f"{section}: '{stripped}' documents the output of no command")
                steps[-1].expected.append(stripped[2:].strip())
                continue
            if not stripped or stripped.startswith("#"):
                continue
        pending = f"{pending}\n{line}" if pending else line
        if not line.endswith("\\") and _complete(pending):
            steps.append(Step(section, pending))
            pending = ""
    if pending:
        raise ValueError(f"{section}: unfinished command {pending!r}")
    return steps


def _complete(command: str) -> bool:
    """No quote left open (the shell would read on)."""
    try:
        shlex.split(command, comments=True)
    except ValueError:
        return False
    return True
