"""A fault-injecting HTTP proxy on loopback in front of an S3-compatible server (moto in server mode).

``FaultProxy(upstream).fail(2, methods={"PUT"})`` answers the next two PUT requests itself, with the error
answers S3 gives under load (503 ``SlowDown``, 500 ``InternalError``, alternately, as XML), and forwards
everything else unchanged. ``delay_s`` holds every answer back that long. It counts what it injected and what
it forwarded, by method, so a test can say how many retries the client made.
"""

from __future__ import annotations

import http.client
import http.server
import threading
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field

S3_ERRORS = ((503, "SlowDown", "Please reduce your request rate."),
             (500, "InternalError", "We encountered an internal error. Please try again."))
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


def s3_error_body(code: str, message: str, resource: str) -> bytes:
    return ("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
            f"<Error><Code>{code}</Code><Message>{message}</Message><Resource>{resource}</Resource>"
            "<RequestId>FAULTPROXY0000001</RequestId><HostId>fault-proxy</HostId></Error>").encode()


@dataclass
class Rule:
    """Fail the next ``remaining`` requests whose method is in ``methods`` (all when empty) and whose path
    starts with ``path_prefix``."""

    remaining: int
    methods: frozenset[str] = frozenset()
    path_prefix: str = "/"

    def matches(self, method: str, path: str) -> bool:
        return self.remaining > 0 and (not self.methods or method in self.methods) and path.startswith(
            self.path_prefix)


@dataclass
class Counts:
    injected: Counter = field(default_factory=Counter)  # method -> error answers made up here
    forwarded: Counter = field(default_factory=Counter)  # method -> requests passed to the upstream
    injected_codes: Counter = field(default_factory=Counter)  # "503 SlowDown" -> count


class FaultProxy:
    def __init__(self, upstream: str, delay_s: float = 0.0):
        parsed = urllib.parse.urlsplit(upstream)
        self.upstream = (parsed.hostname, parsed.port)
        self.delay_s = delay_s
        self.counts = Counts()
        self._rules: list[Rule] = []
        self._lock = threading.Lock()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def fail(self, count: int, methods: set[str] | None = None, path_prefix: str = "/") -> None:
        with self._lock:
            self._rules.append(Rule(count, frozenset(methods or ()), path_prefix))

    def reset(self) -> None:
        with self._lock:
            self._rules.clear()
            self.counts = Counts()

    def _take_fault(self, method: str, path: str) -> tuple[int, str, str] | None:
        """The error to answer with, if a rule claims this request (counted as injected), else None."""
        with self._lock:
            for rule in self._rules:
                if rule.matches(method, path):
                    rule.remaining -= 1
                    error = S3_ERRORS[sum(self.counts.injected.values()) % len(S3_ERRORS)]
                    self.counts.injected[method] += 1
                    self.counts.injected_codes[f"{error[0]} {error[1]}"] += 1
                    return error
            self.counts.forwarded[method] += 1
            return None

    def _handler(self):
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet: the counts are the record
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    return self._chunked_body()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _chunked_body(self) -> bytes:
                data = b""
                while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                    data += self.rfile.read(size)
                    self.rfile.readline()
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                    pass
                return data

            def _answer(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
                if proxy.delay_s:
                    time.sleep(proxy.delay_s)
                self.send_response(status)
                for key, value in headers:
                    if key.lower() not in _HOP_BY_HOP and key.lower() != "content-length":
                        self.send_header(key, value)
                # A HEAD answer announces the length of the body a GET would carry, and sends none.
                length = next((v for k, v in headers if k.lower() == "content-length"), None)
                self.send_header("Content-Length", length if self.command == "HEAD" and length else str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _handle(self) -> None:
                body = self._body()
                fault = proxy._take_fault(self.command, self.path)
                if fault is not None:
                    status, code, message = fault
                    self._answer(status, [("Content-Type", "application/xml")],
                                 s3_error_body(code, message, urllib.parse.urlsplit(self.path).path))
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                if body or self.command in ("PUT", "POST"):
                    headers["Content-Length"] = str(len(body))
                connection = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                try:
                    connection.request(self.command, self.path, body=body or None, headers=headers)
                    response = connection.getresponse()
                    data = response.read()
                    self._answer(response.status, response.getheaders(), data)
                finally:
                    connection.close()

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle

        return Handler
