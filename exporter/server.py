"""HTTP serving of /metrics and /healthz on one or more addresses, with optional TLS and auth."""

from __future__ import annotations

import gzip
import ipaddress
import logging
import socket
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry

from kepler_top.errors import KeplerTopError, UsageError
from kepler_top.exporter.logs import event
from kepler_top.exporter.webconfig import BasicAuth, WebConfig

log = logging.getLogger(__name__)

DEFAULT_LISTEN = ":28282"


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[V6]:PORT`` or ``:PORT`` (every interface) -> (host, port).

    Raises UsageError naming the flag.
    """
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise UsageError(f"--listen {value!r}: expected HOST:PORT, [IPv6]:PORT or :PORT",
                         "e.g. --listen 127.0.0.1:28282 or --listen [::1]:28282")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise UsageError(f"--listen {value!r}: {host!r} is not an IPv6 address",
                             "write an IPv6 address in brackets, e.g. [::1]:28282") from None
    elif ":" in host:
        raise UsageError(f"--listen {value!r}: an IPv6 address needs brackets",
                         f"write [{host}]:{port_text}")
    return host, int(port_text)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Kubernetes may restart the pod while the old socket lingers in TIME_WAIT.
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], family: int, handler: type,
                 tls: ssl.SSLContext | None) -> None:
        self.address_family = family
        self.tls = tls
        super().__init__(address, handler, bind_and_activate=False)
        if family == socket.AF_INET6 and address[0] == "::":
            # ":PORT" means every interface, IPv4 included, as Go's listeners take it.
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        try:
            self.server_bind()
            self.server_activate()
        except BaseException:
            self.server_close()
            raise

    def finish_request(self, request, client_address) -> None:
        # The TLS handshake runs here, in the request's own thread, so a slow or silent client
        # never holds up accept() for the others.
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(30)
        secure = self.tls.wrap_socket(request, server_side=True)
        try:
            super().finish_request(secure, client_address)
        finally:
            # wrap_socket took the descriptor over: the server's own shutdown_request() of the
            # plain socket no longer reaches it, so the TLS socket is closed here.
            try:
                secure.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            secure.close()

    def handle_error(self, request, client_address) -> None:
        event(log, logging.DEBUG, "request_failed", client=client_address[0],
              reason=repr(sys.exc_info()[1]))


def make_handler(
    registry: CollectorRegistry, health: Callable[[], tuple[bool, str]], auth: BasicAuth | None,
) -> type[BaseHTTPRequestHandler]:
    """The request handler class: /metrics (auth when configured), /healthz, / (a link)."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "kepler-top"
        protocol_version = "HTTP/1.1"
        timeout = 30

        def do_GET(self) -> None:  # noqa: N802 (the http.server's name)
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                # Open even with basic auth: the kubelet's probes carry no credentials, and
                # the answer says nothing but whether sampling works.
                ok, reason = health()
                self._send(200 if ok else 503, reason.encode() + b"\n", "text/plain")
            elif path == "/metrics":
                if auth is not None and not auth.check(self.headers.get("Authorization")):
                    self._send(401, b"Unauthorized\n", "text/plain",
                               {"WWW-Authenticate": 'Basic realm="kepler-top"'})
                    return
                encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
                body = encoder(registry)
                extra = {}
                if "gzip" in self.headers.get("Accept-Encoding", ""):
                    body, extra = gzip.compress(body, 1), {"Content-Encoding": "gzip"}
                self._send(200, body, content_type, extra)
            elif path == "/":
                page = b'<html><body><a href="/metrics">/metrics</a> ' \
                       b'<a href="/healthz">/healthz</a></body></html>\n'
                self._send(200, page, "text/html")
            else:
                self._send(404, b"Not found\n", "text/plain")

        def _send(self, status: int, body: bytes, content_type: str,
                  headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args) -> None:  # noqa: A002
            # Per-request lines are debug only: the default level stays quiet.
            event(log, logging.DEBUG, "request", client=self.address_string(),
                  line=format % args)

    return Handler


class Servers:
    """The listeners for every ``--listen`` address, each served in its own thread."""

    def __init__(self, listens: list[tuple[str, int]], handler: type,
                 web: WebConfig | None = None) -> None:
        self.servers: list[_Server] = []
        self._serving = False
        tls = web.tls if web else None
        try:
            for host, port in listens:
                self.servers.append(_bind(host, port, handler, tls))
        except BaseException:
            self.close()
            raise

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """The bound (host, port) of each listener (the port is real where 0 was asked)."""
        return [s.server_address[:2] for s in self.servers]

    def start(self) -> None:
        """Serve every listener in a daemon thread."""
        for s in self.servers:
            threading.Thread(target=s.serve_forever, name=f"kepler-top-http-{s.server_port}",
                             daemon=True).start()
        self._serving = True

    def close(self) -> None:
        """Stop accepting, wait for the serving loops, close the sockets."""
        for s in self.servers:
            if self._serving:
                s.shutdown()
            s.server_close()
        self._serving = False


def _bind(host: str, port: int, handler: type, tls: ssl.SSLContext | None) -> _Server:
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if host == "":
        try:
            return _Server(("::", port), socket.AF_INET6, handler, tls)
        except OSError:
            pass  # no IPv6 on this node: every IPv4 interface instead
        host = "0.0.0.0"
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise UsageError(f"--listen {shown}: cannot resolve {host!r} ({e.strerror})",
                         "give an IP address or a resolvable host name") from None
    family, _, _, _, address = infos[0]
    try:
        return _Server(address[:2], family, handler, tls)
    except OSError as e:
        raise KeplerTopError(f"--listen {shown}: cannot listen ({e.strerror})",
                             "choose a free port and an address of this node") from None
