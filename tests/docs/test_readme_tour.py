"""The README's tour, walked as a new user would: every fenced command of its tour sections, in
order, in an empty folder, against real `hotserve` processes from this checkout.

A command the README documents must exit 0 (or, for the few that show a refusal, the status in
`REFUSED`), a `curl` must not answer an error, and every `#> TEXT` line under a command must match
a line of its output. Only commands that need what a test cannot have (your own table, Redis
database 0, CUDA, several processes) are left out, each with the reason, and each must still be
in the README. `hotserve serve` runs in the background on a free port (the README's 8080 is
rewritten), and a later `hotserve serve` stops the earlier one, as the reader does.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from load_tests.server_process import REPO_ROOT, free_port
from tests.docs.readme_tour import Step, tour_steps

SKIPPED = {
    "hotserve train --dataset my.parquet": "trains on the reader's own table",
    "hotserve train --dataset customers.csv": "trains on the reader's own table",
    "hotserve train --dataset deliveries.parquet": "trains on the reader's own table",
    "hotserve train --nproc 2": "the reader's own table, on two processes",
    "torchrun ": "CUDA and four processes",
    "HOTSERVE_REDIS_URL=redis://127.0.0.1:6379/0 hotserve features materialize customers.parquet": (
        "the reader's own table into Redis database 0 (tests/integration/test_feature_store.py materializes)"
    ),
    "HOTSERVE_ADMIN_TOKEN=... hotserve features materialize demo:fraud --server": (
        "the tour's server has no admin token yet (--feature-table filled its store; "
        "tests/integration/test_feature_store.py materializes through a server)"
    ),
}
"""Command prefix -> why the walk leaves it out."""
REFUSED = {
    "hotserve models unload fraud 2": 1,
    "hotserve models promote fraud 4 --min-requests 1000": 1,
}
"""Command prefix -> the exit status the README documents (a refusal)."""
STEP_TIMEOUT_S = 600.0
START_TIMEOUT_S = 180.0


def _listed(command: str, table: dict[str, object]) -> str | None:
    return next((prefix for prefix in table if command.startswith(prefix)), None)


def test_every_left_out_or_refused_command_is_still_in_the_tour() -> None:
    commands = [step.command for step in tour_steps() if step.file is None]
    for prefix in [*SKIPPED, *REFUSED]:
        assert any(c.startswith(prefix) for c in commands), f"README.md no longer has {prefix!r}: update this test"


class Walk:
    """The reader's shell: environment, working folder, the server in the background."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        shims = folder / ".bin"
        shims.mkdir()
        hotserve = shims / "hotserve"
        hotserve.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m server.cli "$@"\n')
        hotserve.chmod(0o755)
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("HOTSERVE_") and k != "PYTHONPATH"}
        self.env = {
            **inherited,
            "PATH": os.pathsep.join([str(shims), str(Path(sys.executable).parent), inherited.get("PATH", "")]),
            "PYTHONPATH": str(REPO_ROOT),  # `hotserve` and `python -m training` from this checkout
            "HOTSERVE_URL": f"http://127.0.0.1:{self.port}",  # the CLI's default is the README's 8080
        }
        self.server: subprocess.Popen[bytes] | None = None
        self.server_log = folder / "server.log"
        self.transcript: list[str] = []

    def run(self, step: Step) -> None:
        command = step.command.replace("8080", str(self.port))
        if step.file is not None:
            (self.folder / step.file).write_text(step.command)
            return
        if command.startswith("export "):
            self._export(command)
            return
        if " hotserve serve " in f" {command} ":
            self._serve(command)
            return
        if command.split("#", 1)[0].strip() == "kill %1":
            self.stop_server()
            return
        done = subprocess.run(
            ["bash", "-c", command],
            cwd=self.folder,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=STEP_TIMEOUT_S,
        )
        output = done.stdout + done.stderr
        self.transcript.append(f"$ {command}\n{output}")
        expected_status = REFUSED.get(_listed(step.command, REFUSED) or "", 0)
        problems = []
        if done.returncode != expected_status:
            problems.append(f"exit status {done.returncode}, the README implies {expected_status}")
        if command.startswith("curl ") and '{"error"' in output:
            problems.append("the server answered an error")
        problems += [f"no output line matches '#> {text}'" for text in step.matches(output)]
        if problems:
            raise AssertionError(
                f"{step.section}: `{step.command}`: {'; '.join(problems)}\n--- output:\n{output[-4000:]}"
            )

    def _export(self, command: str) -> None:
        name = command.removeprefix("export ").split("=", 1)[0].strip()
        done = subprocess.run(
            ["bash", "-c", f'{command}\nprintf %s "${name}"'],
            cwd=self.folder,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        self.env[name] = done.stdout

    def _serve(self, command: str) -> None:
        self.stop_server()
        with self.server_log.open("ab") as log:
            self.server = subprocess.Popen(
                ["bash", "-c", command.rstrip().removesuffix("&")],
                cwd=self.folder,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stopped with what it started
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._ready():
            if self.server.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"`{command}` did not become ready:\n{self.server_log.read_text()[-4000:]}")
            time.sleep(0.2)  # polling a process's readiness: there is no event to wait on
        self.transcript.append(f"$ {command}\n(ready on port {self.port})")

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/v2/health/ready", timeout=2) as answer:
                return bool(answer.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop_server(self) -> None:
        if self.server is None:
            return
        if self.server.poll() is None:
            os.killpg(self.server.pid, signal.SIGTERM)
            try:
                self.server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.server.pid, signal.SIGKILL)
                self.server.wait()
        self.server = None


@pytest.fixture
def walk(tmp_path: Path) -> Iterator[Walk]:
    reader = Walk(tmp_path)
    try:
        yield reader
    finally:
        reader.stop_server()
        (tmp_path / "transcript.txt").write_text("\n".join(reader.transcript))


@pytest.mark.integration
def test_the_readme_tour_runs_as_written_on_an_empty_folder(walk: Walk) -> None:
    ran = 0
    for step in tour_steps():
        if step.file is None and _listed(step.command, SKIPPED):
            continue
        walk.run(step)
        ran += 1
    assert ran >= 30  # the walk reached the end of the tour, not a section that went missing
