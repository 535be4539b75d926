#!/usr/bin/env python3
"""tests/win/tls-server.py: the HTTPS servers the Windows transport test talks to.

tls-server.py --certs DIR starts one server per certificate on loopback, each on a port the
system picks (127.0.0.1, and ::1 on the same port when the host has it, so that "localhost"
reaches it whichever address the resolver gives first):
  good       DIR/good/server.pem    (signed by DIR/good/ca.pem, the CA the test pins)
  other      DIR/other/server.pem   (signed by another CA)
  wrongname  DIR/wrongname.pem      (signed by the pinned CA, for a name that is not localhost)
  addr       as good, for the test reached by address (wine pools connections process-wide
             by host and port, so it gets a port of its own)
When they listen it prints one JSON line, {"good": PORT, ...}, and serves until stdin closes.

Every server records each request it reads (server, method, path, headers, connection number)
and answers the same routes:
  /echo           200, JSON: the method, path, headers and JSON body it received
  /problem        422 with a problem body whose detail is "the name is taken"
  /retry          503, Retry-After: 7, a problem body
  /retry-date     429, Retry-After as an HTTP date 30 s from now
  /bytes/N        200, N bytes of application/octet-stream
  /hang           no answer: holds the connection until the client closes it
  /small          200, {"ok": true} (the keep-alive throughput measure)
  /_log?server=S  200, JSON {"requests": [...]}: what server S recorded (not itself recorded)
For tests only: it trusts its input and binds loopback alone.
"""
import argparse
import email.utils
import http.server
import json
import os
import socket
import ssl
import sys
import threading
import time
import urllib.parse

LOG = []
LOG_LOCK = threading.Lock()
CONN_IDS = iter(range(1, 1 << 30))


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "orch-test"
    # Headers and body go out in separate writes: without this, Nagle and the client's delayed
    # ACK add some 40 ms to every answer, and the keep-alive measure measures that.
    disable_nagle_algorithm = True

    def log_message(self, fmt, *args):
        pass

    def setup(self):
        self.request.do_handshake()  # here, in the connection's thread, not the accept loop
        super().setup()
        with LOG_LOCK:
            self.conn_id = next(CONN_IDS)

    def _answer(self, status, body=b"", ctype="application/json", headers=()):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status, obj, ctype="application/json", headers=()):
        self._answer(status, json.dumps(obj).encode(), ctype, headers)

    def _problem(self, status, detail, headers=()):
        self._json(status, {"type": "about:blank", "title": "refused", "status": status,
                            "detail": detail}, "application/problem+json", headers)

    def _handle(self):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n > 0 else b""
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/_log":
            want = urllib.parse.parse_qs(url.query).get("server", [None])[0]
            with LOG_LOCK:
                reqs = [r for r in LOG if want is None or r["server"] == want]
            self._json(200, {"requests": reqs})
            return
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        seen = {"server": self.server.name, "method": self.command, "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body,
                "conn": self.conn_id}
        with LOG_LOCK:
            LOG.append(seen)
        if url.path == "/echo":
            self._json(200, seen)
        elif url.path == "/problem":
            self._problem(422, "the name is taken")
        elif url.path == "/retry":
            self._problem(503, "busy, come back later", [("Retry-After", "7")])
        elif url.path == "/retry-date":
            when = email.utils.formatdate(time.time() + 30, usegmt=True)
            self._problem(429, "slow down", [("Retry-After", when)])
        elif url.path.startswith("/bytes/"):
            size = int(url.path[len("/bytes/"):])
            self._answer(200, bytes(i % 251 for i in range(size)), "application/octet-stream")
        elif url.path == "/small":
            self._json(200, {"ok": True})
        elif url.path == "/hang":
            # Hold the connection until the client gives up (EOF or reset), bounded.
            self.connection.settimeout(120)
            try:
                self.connection.recv(1)
            except (OSError, ssl.SSLError):
                pass
            self.close_connection = True
        else:
            self._problem(404, "no such route")

    do_GET = do_POST = do_PUT = do_DELETE = _handle


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, name, addr, family, context):
        self.address_family = family
        self.name = name
        self.context = context
        super().__init__(addr, Handler)

    def server_bind(self):
        if self.address_family == socket.AF_INET6:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        super().server_bind()

    def get_request(self):
        sock, addr = self.socket.accept()
        sock.settimeout(30)
        return self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def handle_error(self, request, client_address):
        pass


def start(name, cert, key):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    for _ in range(20):
        v4 = Server(name, ("127.0.0.1", 0), socket.AF_INET, ctx)
        port = v4.server_address[1]
        try:
            v6 = Server(name, ("::1", port), socket.AF_INET6, ctx)
        except OSError as e:
            if getattr(e, "errno", None) in (97, 99):  # no IPv6 on this host: IPv4 alone
                v6 = None
            else:  # the port is taken on ::1: try another
                v4.server_close()
                continue
        servers = [s for s in (v4, v6) if s]
        for s in servers:
            threading.Thread(target=s.serve_forever, daemon=True).start()
        return port, servers
    raise SystemExit("tls-server: no port free on both 127.0.0.1 and ::1")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--certs", required=True)
    a = ap.parse_args()
    d = a.certs
    ports = {}
    for name, cert, key in (
        ("good", f"{d}/good/server.pem", f"{d}/good/server.key"),
        ("addr", f"{d}/good/server.pem", f"{d}/good/server.key"),
        ("other", f"{d}/other/server.pem", f"{d}/other/server.key"),
        ("wrongname", f"{d}/wrongname.pem", f"{d}/wrongname.key"),
    ):
        ports[name], _ = start(name, cert, key)
    print(json.dumps(ports), flush=True)
    sys.stdin.read()  # serve until the runner closes our stdin (or goes away)
    os._exit(0)


if __name__ == "__main__":
    main()
