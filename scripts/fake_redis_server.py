"""fakeredis's Redis-compatible TCP server, for machines without Redis (the demo only).

Usage: ``python scripts/fake_redis_server.py --port 6390``. In-memory, one process; stops on
SIGTERM or SIGINT. Not for production: use a real Redis there.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from types import FrameType

from fakeredis import TcpFakeServer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)

    server = TcpFakeServer((args.host, args.port), server_type="redis")

    def stop(signum: int, frame: FrameType | None) -> None:
        # Client handler threads are not daemons; leave at once rather than wait for them.
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"fakeredis listening on {args.host}:{args.port}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
