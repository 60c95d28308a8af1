"""A real HTTP server on 127.0.0.1 whose answers a test scripts: the plumbing the tests of HTTP clients share."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol


class Reply(Protocol):
    def __call__(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        """Answer with `status` and `obj` as JSON (a str goes as it is), plus any extra headers."""


@contextmanager
def scripted_server(on_post: Callable[[str, dict[str, Any], dict[str, str], Reply], None],
                    models: tuple[str, ...] = ("m",)) -> Iterator[str]:
    """Serve on a free port: GET lists `models` the OpenAI way; each POST's JSON body goes to
    `on_post(path, body, headers, reply)`, which answers through `reply` (or never, to hang or drop: each
    connection carries one request, so returning without a reply closes it with no answer). Yields the URL
    (without /v1)."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self.reply(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in models]})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            on_post(self.path, body, dict(self.headers), self.reply)

        def reply(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
            data = obj.encode() if isinstance(obj, str) else json.dumps(obj).encode()
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
