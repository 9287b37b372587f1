"""A release policy file's mistakes in an operator's words: the file, the field, what it takes.

pydantic's own message names neither the file nor the fields a section accepts, and ends in a
link; `explain` says, per mistake, where it is (`gates.max_p99_ratoi`), what is wrong, and for
an unknown field the valid ones of its section.
"""

from __future__ import annotations

from pathlib import Path
from typing import get_args

from pydantic import BaseModel, ValidationError


def explain(error: ValidationError, model: type[BaseModel], source: Path) -> str:
    """`release policy FILE: ...`, one line per mistake."""
    lines = [f"release policy {source}: {len(error.errors())} invalid field(s)"]
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(the whole file)"
        if item["type"] == "extra_forbidden":
            section = _section(model, item["loc"][:-1])
            valid = ", ".join(section.model_fields) if section is not None else "-"
            lines.append(f"  {where}: not a policy field; valid fields here: {valid}")
        elif item["type"] in ("model_type", "dict_type") and not item["loc"]:
            lines.append(f"  the file must hold a mapping of policy fields, got {type(item['input']).__name__}")
        else:
            lines.append(f"  {where}: {item['msg']} (got {item['input']!r})")
    return "\n".join(lines)


def _section(model: type[BaseModel], loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The model of the section at `loc` (the policy itself, `gates`, `labels`, ...)."""
    current: type[BaseModel] = model
    for part in loc:
        field = current.model_fields.get(str(part))
        candidates = () if field is None else (field.annotation, *get_args(field.annotation))  # `X | None` too
        found = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if not found:
            return None
        current = found[0]
    return current
