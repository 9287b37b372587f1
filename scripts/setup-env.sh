#!/usr/bin/env bash
# Creates ./.venv (if missing) and installs hotserve into it with the given extras, at the versions
# uv.lock pins. Usage: scripts/setup-env.sh "train,dev"      (run by run.sh and test.sh)
#
# Fails when uv.lock is older than pyproject.toml: `bash scripts/lock.sh` remakes it.
# Packages already in the venv that the lock does not name are left alone (torch, uv, another
# run's extras), so a second run only checks and takes seconds.
# HOTSERVE_TORCH_INDEX_URL: where pip takes torch from (CI: PyTorch's CPU index); pip's own
# configuration otherwise.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
extras="${1:-train}"

uv="$(bash scripts/ensure-uv.sh)"
export UV_PROJECT_ENVIRONMENT="$PWD/.venv"
# --compile-bytecode as pip does: where PYTHONDONTWRITEBYTECODE is set (this project's machines, many
# images) every process would otherwise compile each module it imports from source, every time.
args=(sync --locked --inexact --no-default-groups --compile-bytecode)
IFS=, read -r -a names <<<"$extras"
for name in "${names[@]}"; do
  [ -n "$name" ] && args+=(--extra "$name")
done
train=0
[[ ",$extras," == *",train,"* ]] && train=1
# torch is not in the lock (pyproject.toml [tool.uv]); its dependencies are, as a group.
((train)) && args+=(--group torch-deps)
if ! "$uv" "${args[@]}" -q; then
  echo "setup-env: installing from uv.lock failed (if it is out of date with pyproject.toml: bash scripts/lock.sh)" >&2
  exit 1
fi
((train)) || exit 0

# torch as the `train` extra pins it; pip takes this project's machines' CPU wheel (an unpinned or
# PyPI torch would be gigabytes of CUDA). Its dependencies came from the lock above.
torch_pin="$(.venv/bin/python - <<'PY'
import importlib.metadata
import re
import sys
import tomllib

with open("pyproject.toml", "rb") as fh:
    train = tomllib.load(fh)["project"]["optional-dependencies"]["train"]
(pin,) = [m.group(1) for dep in train if (m := re.fullmatch(r"torch==(\S+)", dep))]
try:
    have = importlib.metadata.version("torch").split("+")[0]
except importlib.metadata.PackageNotFoundError:
    have = None
print("" if have == pin else pin)
PY
)"
if [ -n "$torch_pin" ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps \
    ${HOTSERVE_TORCH_INDEX_URL:+--index-url "$HOTSERVE_TORCH_INDEX_URL"} "torch==$torch_pin"
fi
