"""`hotserve control sign`: vouch for the routing stored in Redis by writing it back signed.

For turning signing on in a fleet whose document is unsigned (a replica with the key refuses
it and would not start), or for accepting a document after a refusal has been investigated.
Reads `HOTSERVE_REDIS_URL` (+ password file, CA) and the key (`HOTSERVE_CONTROL_SIGNING_KEY` or
`..._FILE`) from the environment, never from flags; shows the stored routing, and only with
`--yes` writes it back, unchanged, as the next revision (compare-and-set), signed.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from server.errors import ControlConflict, HotserveError
from server.redis_access import redis_access_for
from server.registry.control_signing import ControlSigner, signer_for
from server.registry.redis_control_state import RedisControlState
from server.settings import Settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="control_command", required=True)
    sign = sub.add_parser("sign", help="write the routing stored in Redis back, signed (after checking it)")
    sign.add_argument("--yes", action="store_true", help="write it; without: only show what would be signed")


def run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_sign(Settings(), args.yes))
    except (ValueError, HotserveError) as error:
        print(f"hotserve control sign: error: {error}", file=sys.stderr)
        return 2


async def _sign(settings: Settings, confirmed: bool) -> int:
    access = redis_access_for(settings)
    signer = signer_for(settings)
    if access is None or not signer.signing:
        raise ValueError("needs HOTSERVE_REDIS_URL and HOTSERVE_CONTROL_SIGNING_KEY (or _FILE) in the environment")
    prefix = settings.control_key_prefix
    unverified = RedisControlState(access, key_prefix=prefix, signer=ControlSigner())
    signed = RedisControlState(access, key_prefix=prefix, signer=signer)
    try:
        stored = await unverified.read()
        if stored.revision == 0:
            raise ValueError(f"no control document under {prefix}:control in {access.shown}")
        print(f"revision {stored.revision} in {access.shown}:")
        for name, control in sorted(stored.models.items()):
            print(f"  {name}: aliases {dict(sorted(control.aliases.items()))}, traffic {control.traffic or '-'}")
        if not confirmed:
            print("check it, then run again with --yes to write it back signed")
            return 1
        try:
            written = await signed.write(stored, expected_revision=stored.revision)
        except ControlConflict as conflict:
            raise ValueError(f"the document changed while it was shown ({conflict}); run again") from None
        print(f"written back signed as revision {written.revision}")
        return 0
    finally:
        await unverified.close()
        await signed.close()
