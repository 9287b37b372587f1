"""Container HEALTHCHECK: exit 0 when the server in this container answers /v2/health/ready.

Runs inside the image (python-slim has no curl), so it uses only the standard library.
The port comes from HOTSERVE_PORT, the same variable the server binds.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def check(port: int, timeout_s: float) -> str | None:
    """Return None when ready, else why not (printed into the container's health log)."""
    url = f"http://127.0.0.1:{port}/v2/health/ready"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        return f"{url}: HTTP {exc.code}"
    except (OSError, urllib.error.URLError) as exc:
        return f"{url}: {exc}"
    return None if status == 200 else f"{url}: HTTP {status}"


def main() -> int:
    port = int(os.environ.get("HOTSERVE_PORT", "8080"))
    timeout_s = float(os.environ.get("HOTSERVE_HEALTHCHECK_TIMEOUT_S", "2"))
    problem = check(port, timeout_s)
    if problem is not None:
        print(f"not ready: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
