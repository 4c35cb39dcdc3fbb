"""The image's HEALTHCHECK: GET /healthz of the service in this container; exit 0 on 200.

The port is CYCLONE_LISTEN's (HOST:PORT, as shared.config reads it; the image's default
0.0.0.0:8080). Standard library only, and not shared.config itself: Docker runs this every
few seconds, and importing Cyclone's settings costs a second of CPU each time. The
answer's body (a 503 names what is unreachable) is printed, which `docker inspect` keeps.
"""

import os
import sys
import urllib.error
import urllib.request

WILDCARDS = {"", "0.0.0.0", "::", "[::]"}


def healthz_url(listen: str) -> str:
    host, _, port = listen.rpartition(":")
    if host in WILDCARDS:
        host = "127.0.0.1"  # a wildcard address listens on loopback too
    return f"http://{host}:{port}/healthz"


def main() -> int:
    url = healthz_url(os.environ.get("CYCLONE_LISTEN") or "0.0.0.0:8080")
    try:
        with urllib.request.urlopen(url, timeout=4) as response:
            print(response.read(500).decode(errors="replace"))
            return 0 if response.status == 200 else 1
    except urllib.error.HTTPError as exc:
        print(f"{url}: {exc.code} {exc.read(500).decode(errors='replace')}")
    except OSError as exc:
        print(f"{url}: {exc}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
