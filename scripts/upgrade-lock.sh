#!/usr/bin/env bash
# Moves the lock forward on purpose: every pin in uv.lock and requirements/ to the newest release
# the ranges in pyproject.toml and requirements/*.in allow (scripts/lock.sh --upgrade), then the
# whole suite on them (scripts/test.sh: installs what the new lock says, ruff, mypy, pytest).
# Green: review `git diff uv.lock requirements/` and commit it. Red: fix the code (or narrow a range
# in pyproject.toml with the reason) and run this again. Arguments go to pytest.
# .github/workflows/newest-releases.yml runs this on a schedule, so an upstream release that breaks
# hotserve shows up there before a user's fresh install meets it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/lock.sh --upgrade
git --no-pager diff --stat -- uv.lock requirements/ 2>/dev/null || true
exec bash scripts/test.sh "$@"
