"""The table files hotserve reads: CSV or Parquet, told apart by their suffix.

Training data and import reference tables (`training/datasets/tables.py`, read into a typed
frame with pandas) and feature store fills (`server/features/table.py`, read row by row without
pandas) parse them differently, for their own needs; which files are tables, and what is said
about one that is not, is defined here once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

TableFormat = Literal[".csv", ".parquet"]
TABLE_FORMATS: tuple[TableFormat, ...] = (".csv", ".parquet")


def table_format(path: Path) -> TableFormat:
    """The format of the table file at `path`; ValueError saying what is wrong when it is not one."""
    if not path.is_file():
        raise ValueError("file not found")
    suffix = path.suffix.lower()
    for known in TABLE_FORMATS:
        if suffix == known:
            return known
    raise ValueError(f"unsupported file type {path.suffix!r}; expected {' or '.join(TABLE_FORMATS)}")
