"""The alias names with a meaning of their own, shared by the control state, routing, the admin
API's clients (`hotserve models`, the load-test operator) and their tests.

`production` serves requests that name no version, and is what a traffic split's remainder and
a rollback go to; `canary` is the conventional name of the version a release tries first. Any
other alias is just a name for a version.
"""

from __future__ import annotations

PRODUCTION = "production"
CANARY = "canary"
