"""A WSGI app served on a loopback port in a thread, counting the requests per path."""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterable
from typing import Any

from werkzeug.serving import make_server


class Served:
    """``Served(app)`` serves ``app`` at ``self.url`` until :meth:`stop`; ``hits[path]`` counts."""

    def __init__(self, app: Any) -> None:
        self.hits: collections.Counter[str] = collections.Counter()
        self._app = app
        self._server = make_server("127.0.0.1", 0, self._counting, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _counting(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        self.hits[environ.get("PATH_INFO", "")] += 1
        return self._app(environ, start_response)  # type: ignore[no-any-return]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
