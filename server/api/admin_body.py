"""Request bodies of the admin routes: JSON whatever the Content-Type, checked against a model.

The inference routes read a JSON body whatever its Content-Type; so do the admin routes, so
`curl -d '{"version": 2}'` (which sends `application/x-www-form-urlencoded`) and Triton's
clients (which send none) work alike. A body that does not validate is 400 naming the field.
"""

from __future__ import annotations

from typing import TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from server.errors import InvalidInput

BodyT = TypeVar("BodyT", bound=BaseModel)


async def json_body(request: Request, shape: type[BodyT], empty_ok: bool = False) -> BodyT:
    """`request`'s body as `shape`; an empty body gives `shape`'s defaults when `empty_ok`."""
    raw = await request.body()
    if not raw.strip():
        if empty_ok:
            return shape()
        raise InvalidInput("body", expected="a JSON object", got="an empty body")
    try:
        return shape.model_validate_json(raw)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(body)'}: {e['msg']}" for e in error.errors())
        content_type = request.headers.get("content-type", "")
        if content_type and "json" not in content_type:
            problems += f" (the body is read as JSON whatever its Content-Type; this one says {content_type})"
        raise InvalidInput("body", detail=problems) from None
