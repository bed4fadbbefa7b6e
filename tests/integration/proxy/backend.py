"""A small HTTP/1.1 backend for atrium-proxy's integration test.

Standard library only (Debian's /usr/bin/python3). Each backend is a threaded
http.server on 127.0.0.1 speaking HTTP/1.1 with keep-alive, and answers every
request with JSON saying which backend answered and what it received:

    {"backend": NAME, "method", "path", "headers": {lower-case name: value},
     "header_list": [[name, value], ...], "body_length", "body_sha256",
     "request_chunked", "connection": <id of the TCP connection>,
     "request_on_connection": <1 for the first request of that connection>}

Paths with a meaning of their own:
    /sleep/<ms>[...]   waits that long before answering (route timeouts);
    /chunked[...]      answers with a chunked body (see CHUNKED_PARTS);
    /close[...]        answers with "Connection: close" and closes;
    /bytes/<n>         answers with n bytes of body_pattern(n) instead of JSON.

A request body is read as it arrives (Content-Length or chunked) and never
held: only its length and SHA-256 are kept, and `progress` counts the body
bytes read so far, so a test can see a large body arrive while it is sent.

Used in-process by proxy_test.py; `python3 backend.py NAME` runs one on a
free port (printed) for manual poking.
"""

import hashlib
import http.server
import json
import socket
import socketserver
import sys
import threading
import time

CHUNKED_PARTS = [b"first chunk;", b"", b"second chunk, a bit longer;", b"x" * 5000, b"last"]


def body_pattern(length):
    """The body /bytes/<length> answers with: 0, 1, ... 255, 0, 1, ..."""
    return (bytes(range(256)) * (length // 256 + 1))[:length]


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "atrium-test-backend"
    sys_version = ""
    timeout = 60  # an idle keep-alive connection is dropped after this
    wbufsize = 1 << 16  # a response's head and body leave in one write (flushed below)

    def setup(self):
        # Without TCP_NODELAY a response written in two pieces waits for the
        # proxy's delayed ACK (40 ms a request).
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().setup()
        self.connection_id = self.server.backend._new_connection()
        self.requests_here = 0

    def log_message(self, format, *args):  # quiet
        pass

    # Every method is served the same way.
    def do_GET(self):
        self._serve()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = do_GET

    def handle_expect_100(self):
        # The proxy answers Expect itself and drops the header; should one
        # reach us anyway, it is recorded (in header_list) and honoured.
        return super().handle_expect_100()

    def _read_body(self):
        backend = self.server.backend
        digest = hashlib.sha256()
        length = 0
        encoding = (self.headers.get("Transfer-Encoding") or "").lower()
        chunked = "chunked" in encoding
        if chunked:
            while True:
                size_line = self.rfile.readline(1024)
                if not size_line:
                    raise ConnectionError("body cut inside chunked framing")
                size = int(size_line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while True:  # trailers, then the blank line
                        line = self.rfile.readline(65537)
                        if line in (b"\r\n", b"\n", b""):
                            break
                    break
                remaining = size
                while remaining:
                    data = self.rfile.read(min(remaining, 1 << 20))
                    if not data:
                        raise ConnectionError("body cut inside a chunk")
                    digest.update(data)
                    remaining -= len(data)
                    length += len(data)
                    backend.progress += len(data)
                self.rfile.readline(16)  # CRLF after the chunk
        else:
            remaining = int(self.headers.get("Content-Length") or 0)
            while remaining:
                data = self.rfile.read(min(remaining, 1 << 20))
                if not data:
                    raise ConnectionError("body cut short")
                digest.update(data)
                remaining -= len(data)
                length += len(data)
                backend.progress += len(data)
        return length, digest.hexdigest(), chunked

    def _serve(self):
        backend = self.server.backend
        self.requests_here += 1
        try:
            body_length, body_sha, chunked = self._read_body()
        except (ConnectionError, ValueError):
            self.close_connection = True
            return
        path = self.path
        backend._record(self.connection_id, path)
        if path.startswith("/sleep/"):
            try:
                milliseconds = int(path[len("/sleep/"):].split("?")[0].split("/")[0])
            except ValueError:
                milliseconds = 0
            backend._stopping.wait(milliseconds / 1000.0)
        answer = {
            "backend": backend.name,
            "method": self.command,
            "path": path,
            "headers": {name.lower(): value for name, value in self.headers.items()},
            "header_list": [[name, value] for name, value in self.headers.items()],
            "body_length": body_length,
            "body_sha256": body_sha,
            "request_chunked": chunked,
            "connection": self.connection_id,
            "request_on_connection": self.requests_here,
        }
        payload = json.dumps(answer).encode()
        if path.startswith("/bytes/"):
            try:
                payload = body_pattern(int(path[len("/bytes/"):].split("?")[0]))
            except ValueError:
                pass
        closing = path.startswith("/close")
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("X-Backend", backend.name)
            if closing:
                self.send_header("Connection", "close")
                self.close_connection = True
            if path.startswith("/chunked"):
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                if self.command != "HEAD":
                    for part in CHUNKED_PARTS:
                        if part:
                            self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                    self.wfile.write(b"0\r\n\r\n")
            else:
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


class Backend:
    """One backend on 127.0.0.1 (port 0: a free one). start() returns self."""

    def __init__(self, name, port=0):
        self.name = name
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.connections = 0  # TCP connections accepted
        self.requests = 0
        self.paths = []  # (connection id, path) of every request, in order
        self.progress = 0  # body bytes read so far (all requests)
        self._server = _Server(("127.0.0.1", port), _Handler)
        self._server.backend = self
        self.port = self._server.server_address[1]
        self._thread = None

    def start(self):
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
            name="backend-" + self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._stopping.set()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(10)
            self._thread = None
        self._server.server_close()

    def _new_connection(self):
        with self._lock:
            self.connections += 1
            return "%s-%d" % (self.name, self.connections)

    def _record(self, connection_id, path):
        with self._lock:
            self.requests += 1
            self.paths.append((connection_id, path))

    def snapshot(self):
        with self._lock:
            return {"connections": self.connections, "requests": self.requests,
                    "paths": list(self.paths)}


if __name__ == "__main__":
    backend = Backend(sys.argv[1] if len(sys.argv) > 1 else "backend").start()
    print("backend %s on 127.0.0.1:%d" % (backend.name, backend.port), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        backend.stop()
