"""HTTP serving of /metrics and /healthz on one or more addresses, with optional TLS and auth."""

from __future__ import annotations

import gzip
import ipaddress
import logging
import socket
import ssl
import sys
import threading
import time
from collections import OrderedDict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry

from kepler_top.errors import KeplerTopError, UsageError
from kepler_top.exporter.logs import event
from kepler_top.exporter.webconfig import BasicAuth, WebConfig

log = logging.getLogger(__name__)

DEFAULT_LISTEN = ":28282"
# Requests served at once per listener; more wait in the listen backlog, and one that waits
# longer than SLOT_WAIT_S is answered 503, so slow clients cannot use up file descriptors.
MAX_CONNECTIONS = 64
SLOT_WAIT_S = 5.0
# A client must send its whole request line and headers within this many seconds of
# connecting (or of its previous response): a per-read timeout alone lets one that sends a
# header line now and then hold a slot for ever. Scrapers send a request in milliseconds.
REQUEST_DEADLINE_S = 10.0
# With every slot taken, a connection that has waited this long without a request gives its
# slot to a new one.
IDLE_GRACE_S = 0.25
METHODS = ("GET", "HEAD")
MAX_BODY = 64 * 1024  # a scrape has no body; a larger one closes the connection unread
BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
        b"Content-Length: 5\r\nRetry-After: 1\r\nConnection: close\r\n\r\nbusy\n")


def _shutdown(sock: socket.socket) -> None:
    # Wakes the thread blocked reading it, which then ends and frees its slot.
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[V6]:PORT`` or ``:PORT`` (every interface) -> (host, port).

    Raises UsageError naming the flag.
    """
    host, sep, port_text = value.rpartition(":")
    # isdigit() alone takes other scripts' digits ("٣٩١٠٥"), which int() reads as a port.
    if (not sep or not (port_text.isascii() and port_text.isdigit())
            or not 0 < int(port_text) < 65536):
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
    # The default backlog of 5 refuses connections when hundreds of scrapers arrive at once.
    request_queue_size = socket.SOMAXCONN

    def __init__(self, address: tuple[str, int], family: int, handler: type | None,
                 tls: ssl.SSLContext | None, max_connections: int = MAX_CONNECTIONS,
                 slot_wait_s: float = SLOT_WAIT_S) -> None:
        self.address_family = family
        self.tls = tls
        self.slots = threading.BoundedSemaphore(max_connections)
        self.slot_wait_s = slot_wait_s
        # Connections holding a slot while no request has arrived on them yet (a new one, a
        # kept-alive one between scrapes, a TLS handshake), oldest first: when every slot is
        # taken, the oldest of them gives its slot up, so idle connections cannot keep a
        # scraper that sends its request at once waiting behind them.
        self._idle: OrderedDict[object, tuple[float, Callable[[], None]]] = OrderedDict()
        self._idle_lock = threading.Lock()
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

    def idle(self, key: object, cut: Callable[[], None]) -> None:
        """``key`` holds a slot and waits for its client to send a request."""
        with self._idle_lock:
            self._idle[key] = (time.monotonic(), cut)

    def busy(self, key: object) -> None:
        """``key``'s request has arrived (or its connection is ending)."""
        with self._idle_lock:
            self._idle.pop(key, None)

    def _evict_idle(self) -> bool:
        """Cut the connection that has waited longest for a request, if it has waited
        IDLE_GRACE_S: a scraper's request follows its connection within milliseconds."""
        with self._idle_lock:
            if not self._idle:
                return False
            key, (since, cut) = next(iter(self._idle.items()))
            if time.monotonic() - since < IDLE_GRACE_S:
                return False
            del self._idle[key]
        event(log, logging.DEBUG, "idle_connection_cut", reason="every slot taken")
        cut()
        return True

    def process_request(self, request, client_address) -> None:
        # Runs in the accepting thread: waiting here leaves further connections in the
        # kernel's backlog, where they hold no descriptor of this process.
        deadline = time.monotonic() + self.slot_wait_s
        got = self.slots.acquire(blocking=False)
        while not got:
            # An idle connection past its grace gives way; one may come of age meanwhile.
            self._evict_idle()
            left = deadline - time.monotonic()
            if left <= 0:
                break
            got = self.slots.acquire(timeout=min(left, 0.05))
        if not got:
            event(log, logging.DEBUG, "request_refused", client=client_address[0],
                  reason="busy")
            if self.tls is None:  # a TLS client, before its handshake, sees the connection close
                try:
                    request.setblocking(False)
                    request.send(BUSY)
                except OSError:
                    pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def finish_request(self, request, client_address) -> None:
        # The TLS handshake runs here, in the request's own thread, so a slow or silent client
        # never holds up accept() for the others.
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(30)
        self.idle(request, lambda: _shutdown(request))
        try:
            secure = self.tls.wrap_socket(request, server_side=True)
        finally:
            self.busy(request)
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
        request_deadline_s = REQUEST_DEADLINE_S

        def handle_one_request(self) -> None:
            # Cut the connection if the request has not arrived whole by the deadline; the
            # timer is stopped as soon as the headers are parsed, so a slow download of a
            # large exposition is not cut.
            self._deadline = threading.Timer(self.request_deadline_s, self._cut)
            self._deadline.daemon = True
            self._deadline.start()
            self.server.idle(self, self._cut)
            try:
                super().handle_one_request()
            finally:
                self._deadline.cancel()
                self.server.busy(self)

        def _cut(self) -> None:
            _shutdown(self.connection)

        def version_string(self) -> str:
            return self.server_version  # not the Python version: it helps only an attacker

        def parse_request(self) -> bool:
            parsed = super().parse_request()
            self._deadline.cancel()
            self.server.busy(self)
            if not parsed:
                return False
            if not self._discard_body():
                return False
            if self.command not in METHODS:
                self.close_connection = True
                self._send(405, b"Method not allowed\n", "text/plain",
                           {"Allow": ", ".join(METHODS), "Connection": "close"})
                return False
            return True

        def _discard_body(self) -> bool:
            """Read a request body away, so that it is not taken for the next request."""
            if self.headers.get("Transfer-Encoding"):
                self.close_connection = True  # chunked: not worth parsing, end after reply
                return True
            length = self.headers.get("Content-Length")
            if length is None:
                return True
            length = length.strip()
            if not (length.isascii() and length.isdigit()):
                self.close_connection = True
                self._send(400, b"Bad Content-Length\n", "text/plain", {"Connection": "close"})
                return False
            n = int(length)
            if n > MAX_BODY:
                self.close_connection = True
            elif n:
                self.rfile.read(n)
            return True

        def send_error(self, code: int, message: str | None = None,
                       explain: str | None = None) -> None:
            # http.server's own errors (bad request line, headers too long) as plain text,
            # not its HTML page; with a status line even when the request line was too broken
            # to tell the version (no client speaks HTTP/0.9, which has none).
            self.close_connection = True
            self.request_version = self.protocol_version
            try:
                text = (message or self.responses.get(code, ("Error",))[0]).encode(
                    "latin-1", "replace")
                self._send(code, text + b"\n", "text/plain", {"Connection": "close"})
            except OSError:
                pass

        def do_HEAD(self) -> None:  # noqa: N802
            self.do_GET()

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
                if accepts_gzip(self.headers.get("Accept-Encoding", "")):
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
            if self.command != "HEAD":
                self.wfile.write(body)

        def log_message(self, format: str, *args) -> None:  # noqa: A002
            # Per-request lines are debug only: the default level stays quiet.
            event(log, logging.DEBUG, "request", client=self.address_string(),
                  line=format % args)

    return Handler


def accepts_gzip(header: str) -> bool:
    """Whether an Accept-Encoding value allows gzip: named, or ``*``, with a q above 0."""
    weights: dict[str, float] = {}
    for part in header.split(","):
        name, *params = part.split(";")
        q = 1.0
        for p in params:
            key, _, value = p.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        name = name.strip().lower()
        if name:
            weights[name] = q
    if "gzip" in weights:
        return weights["gzip"] > 0
    return weights.get("*", 0.0) > 0


class Servers:
    """The listeners for every ``--listen`` address, each served in its own thread."""

    def __init__(self, listens: list[tuple[str, int]], handler: type | None,
                 web: WebConfig | None = None, *, max_connections: int = MAX_CONNECTIONS,
                 slot_wait_s: float = SLOT_WAIT_S) -> None:
        self.servers: list[_Server] = []
        self._serving = False
        tls = web.tls if web else None
        try:
            for host, port in listens:
                self.servers.append(_bind(host, port, handler, tls,
                                          max_connections, slot_wait_s))
        except BaseException:
            self.close()
            raise

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """The bound (host, port) of each listener (the port is real where 0 was asked)."""
        return [s.server_address[:2] for s in self.servers]

    def start(self, handler: type | None = None) -> None:
        """Serve every listener in a daemon thread (with ``handler`` if the sockets were bound
        before it existed: the exporter binds first, so a taken port fails before the engine
        starts)."""
        for s in self.servers:
            if handler is not None:
                s.RequestHandlerClass = handler
            if s.RequestHandlerClass is None:
                raise ValueError("Servers.start: no request handler")
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


def _bind(host: str, port: int, handler: type | None, tls: ssl.SSLContext | None,
          max_connections: int, slot_wait_s: float) -> _Server:
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if host == "":
        try:
            return _Server(("::", port), socket.AF_INET6, handler, tls, max_connections,
                           slot_wait_s)
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
        return _Server(address[:2], family, handler, tls, max_connections, slot_wait_s)
    except OSError as e:
        raise KeplerTopError(f"--listen {shown}: cannot listen ({e.strerror})",
                             "choose a free port and an address of this node") from None
