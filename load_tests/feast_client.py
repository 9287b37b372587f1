"""Feast's own calls on a repository `feast_repo.py` wrote; run by `.venv-feast/bin/python` only.

    feast_client.py REPO materialize START END    feast apply, then materialize [START, END] (Unix s)
    feast_client.py REPO online < {"features": [...], "entities": [...]}
                                                  get_online_features(...).to_dict(), as JSON rows
    feast_client.py REPO time < {"features": [...], "entities": [...], "runs": N}
                                                  N timed get_online_features calls: seconds, as JSON

Not imported by hotserve (Feast is not installed beside it); stdlib and Feast only.
"""

from __future__ import annotations

import json
import math
import runpy
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def _store(repo: Path) -> Any:
    from feast import FeatureStore

    return FeatureStore(repo_path=str(repo))


def materialize(repo: Path, start: float, end: float) -> None:
    """What `feast apply` then `feast materialize` do, in one process (Feast imports slowly)."""
    from feast import Entity, FeatureView

    store = _store(repo)
    objects = runpy.run_path(str(repo / "definitions.py")).values()
    store.apply([o for o in objects if isinstance(o, (Entity, FeatureView))])
    store.materialize(datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(end, UTC))


def _rows(result: dict[str, list[Any]]) -> list[dict[str, Any]]:
    count = len(next(iter(result.values()))) if result else 0
    rows = [{name: values[i] for name, values in result.items()} for i in range(count)]
    for row in rows:  # JSON has no NaN; a null is what it means
        for name, value in row.items():
            if isinstance(value, float) and math.isnan(value):
                row[name] = None
    return rows


def main(argv: list[str]) -> int:
    repo, command = Path(argv[0]), argv[1]
    if command == "materialize":
        materialize(repo, float(argv[2]), float(argv[3]))
        return 0
    request = json.loads(sys.stdin.read())
    store = _store(repo)
    if command == "online":
        result = store.get_online_features(features=request["features"], entity_rows=request["entities"]).to_dict()
        print(json.dumps(_rows(result)))
        return 0
    if command == "time":
        seconds = []
        for _ in range(request["runs"]):
            started = time.perf_counter()
            store.get_online_features(features=request["features"], entity_rows=request["entities"]).to_dict()
            seconds.append(time.perf_counter() - started)
        print(json.dumps(seconds))
        return 0
    print(f"unknown command {command!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
