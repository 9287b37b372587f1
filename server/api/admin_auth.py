"""Bearer-token check for `/admin` routes: `AdminDep`.

A minimal stand-in for the admin API's authentication (issue 8 builds the full one, with named
tokens and an audit log, in `server/api/admin.py`); routes depend on `AdminDep` only, so
pointing it at that implementation is a one-line change. Same rules: no `HOTSERVE_ADMIN_TOKEN`
-> the admin routes do not exist (404); no or malformed `Authorization: Bearer` -> 401;
a wrong token -> 403. Tokens are compared in constant time and never logged.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from starlette.exceptions import HTTPException

from server.api.deps import Edge


async def require_admin(request: Request) -> str:
    """The caller's token name (`admin`) once its bearer token checks out."""
    edge: Edge = request.app.state.edge
    token = edge.settings.admin_token
    if token is None:
        raise HTTPException(404, "Not Found")
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise HTTPException(401, "admin routes need an 'Authorization: Bearer <token>' header",
                            headers={"WWW-Authenticate": "Bearer"})
    if not hmac.compare_digest(given.strip().encode(), token.get_secret_value().encode()):
        raise HTTPException(403, "admin token not accepted")
    return "admin"


AdminDep = Annotated[str, Depends(require_admin)]
