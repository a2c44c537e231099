"""Servers on loopback that speak the kubelet's and the Kubernetes API server's wire protocol
for pods, for the tests of kepler_top.kube.

``PodApiServer`` serves ``GET /api/v1/pods``: a list (``PodList`` with ``resourceVersion``)
and, with ``watch=true``, a chunked stream of JSON watch events (ADDED, MODIFIED, DELETED,
BOOKMARK, and ERROR carrying a ``Status`` with code 410 when the version is too old). The field
selector ``spec.nodeName=X`` is honoured. Tests drive it: add, change or delete a pod, send a
bookmark, expire the watch, drop its connection, or forbid everything (403). They can also
make it misbehave: answer the list with any bytes, add items of the wrong shape, send a watch
line that is not an event, send the list one byte at a time, or never answer at all.
"""

from __future__ import annotations

import copy
import json
import os
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def fixture_pods() -> list[dict]:
    """The pod documents of fixtures/kube-pods/podlist.json (a fresh copy each call)."""
    doc = json.loads((FIXTURES / "kube-pods" / "podlist.json").read_text())
    return doc["items"]


def status_doc(code: int, reason: str, message: str) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


class _Watch:
    def __init__(self) -> None:
        self.cond_events: list[dict] = []
        self.end: str | None = None  # "gone", "drop", "close", or "client" (it went away)
        self.bookmarks = False


class PodApiServer:
    """A pod API on 127.0.0.1 with a free port; ``url`` is its address."""

    def __init__(self, pods: list[dict] | None = None) -> None:
        self.lock = threading.Condition()
        self.version = 4711
        self.compacted = 0  # a watch from a version below this gets 410 Gone
        self.history: list[tuple[int, dict]] = []
        self.pods: dict[str, dict] = {}
        for p in pods or []:
            self.pods[p["metadata"]["uid"]] = self._stamp(p)
        self.forbidden = False
        self.list_body: bytes | None = None  # served as the list's body instead of a PodList
        self.extra_items: list = []  # appended to the list's items as they are (any shape)
        self.trickle_s: float | None = None  # the list is sent one byte per this many seconds
        self.stall: set[str] = set()  # "list" and/or "watch": accept, then never answer
        self.list_delay_s = 0.0  # a slow API server: the list answers after this long
        self.closing = threading.Event()
        # ("list" | "watch", query), or ("unserved <path>", query) for anything else asked
        self.requests: list[tuple[str, dict]] = []
        self.watches: list[_Watch] = []
        server = self

        class Handler(_Handler):
            api = server

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> PodApiServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.closing.set()
        with self.lock:
            for w in self.watches:
                w.end = "close"
            self.lock.notify_all()
        self.httpd.shutdown()
        self.httpd.server_close()

    def kubeconfig(self, path: Path) -> str:
        """Write a kubeconfig for this server at ``path``; returns the path."""
        path.write_text(
            "apiVersion: v1\nkind: Config\ncurrent-context: test\n"
            f"clusters:\n- name: test\n  cluster:\n    server: {self.url}\n"
            "users:\n- name: test\n  user:\n    token: test-token\n"
            "contexts:\n- name: test\n  context:\n    cluster: test\n    user: test\n"
        )
        return str(path)

    def count(self, kind: str) -> int:
        with self.lock:
            return sum(1 for k, _ in self.requests if k == kind)

    def open_watches(self) -> int:
        with self.lock:
            return sum(1 for w in self.watches if w.end is None)

    # Changes, as a controller or the kubelet would make them.

    def _stamp(self, pod: dict) -> dict:
        pod = copy.deepcopy(pod)
        self.version += 1
        pod["metadata"]["resourceVersion"] = str(self.version)
        return pod

    def _emit(self, kind: str, pod: dict) -> None:
        event = {"type": kind, "object": pod}
        self.history.append((self.version, event))
        for w in self.watches:
            if w.end is None:
                w.cond_events.append(event)
        self.lock.notify_all()

    def add(self, pod: dict) -> None:
        with self.lock:
            pod = self._stamp(pod)
            self.pods[pod["metadata"]["uid"]] = pod
            self._emit("ADDED", pod)

    def modify(self, pod: dict) -> None:
        with self.lock:
            pod = self._stamp(pod)
            self.pods[pod["metadata"]["uid"]] = pod
            self._emit("MODIFIED", pod)

    def delete(self, uid: str) -> None:
        with self.lock:
            pod = self._stamp(self.pods.pop(uid))
            self._emit("DELETED", pod)

    def bookmark(self) -> int:
        """Send a BOOKMARK at a newer version to watches that asked for bookmarks."""
        with self.lock:
            self.version += 1
            mark = {"type": "BOOKMARK", "object": {
                "kind": "Pod", "apiVersion": "v1",
                "metadata": {"resourceVersion": str(self.version),
                             "annotations": {"k8s.io/initial-events-end": "true"}}}}
            for w in self.watches:
                if w.end is None and w.bookmarks:
                    w.cond_events.append(mark)
            self.lock.notify_all()
            return self.version

    def expire(self) -> None:
        """Compact history: open watches get 410 Gone, and so does any watch from before now."""
        with self.lock:
            self.compacted = self.version
            self.history.clear()
            for w in self.watches:
                if w.end is None:
                    w.end = "gone"
            self.lock.notify_all()

    def end_watches(self) -> None:
        """End every open watch cleanly, as the server does when its timeout passes."""
        with self.lock:
            for w in self.watches:
                if w.end is None:
                    w.end = "close"
            self.lock.notify_all()

    def raw_line(self, line: bytes) -> None:
        """Send ``line`` (and a newline) as it is on every open watch."""
        with self.lock:
            for w in self.watches:
                if w.end is None:
                    w.cond_events.append(line)
            self.lock.notify_all()

    def drop(self) -> None:
        """Cut every open watch's connection without ending the chunked stream."""
        with self.lock:
            for w in self.watches:
                if w.end is None:
                    w.end = "drop"
            self.lock.notify_all()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    api: PodApiServer

    def log_message(self, format, *args) -> None:  # keep pytest's output clean
        pass

    def _json(self, code: int, doc: dict) -> None:
        body = json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _trickle(self, code: int, body: bytes) -> None:
        """The whole answer, status line included, one byte per ``trickle_s``."""
        head = (f"HTTP/1.1 {code} OK\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        try:
            for byte in head + body:
                if self.api.closing.wait(self.api.trickle_s or 0):
                    break
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
        except OSError:  # the client gave up: what the test wants
            pass
        self.close_connection = True

    def do_GET(self) -> None:
        url = urlparse(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        api = self.api
        if url.path != "/api/v1/pods":
            with api.lock:
                api.requests.append(("unserved " + url.path, query))
            self._json(404, status_doc(404, "NotFound", f"the server could not find {url.path}"))
            return
        watching = query.get("watch") in ("true", "1")
        kind = "watch" if watching else "list"
        with api.lock:
            api.requests.append((kind, query))
            forbidden = api.forbidden
            stall = kind in api.stall
            delay = api.list_delay_s if kind == "list" else 0.0
        if delay:
            time.sleep(delay)
        if stall:  # as a server whose backend hangs: the connection stays open, silent
            while not api.closing.wait(0.1):
                pass
            self.close_connection = True
            return
        if forbidden:
            self._json(403, status_doc(
                403, "Forbidden",
                'pods is forbidden: User "system:serviceaccount:monitoring:kepler-top" cannot '
                f'{"watch" if watching else "list"} resource "pods" in API group "" at the '
                "cluster scope"))
            return
        node = None
        selector = query.get("fieldSelector", "")
        if selector.startswith("spec.nodeName="):
            node = selector.partition("=")[2]

        def mine(pod: dict) -> bool:
            return node is None or (pod.get("spec") or {}).get("nodeName") == node

        if not watching:
            with api.lock:
                items = [p for p in api.pods.values() if mine(p)] + list(api.extra_items)
                doc = {"kind": "PodList", "apiVersion": "v1",
                       "metadata": {"resourceVersion": str(api.version)}, "items": items}
                body = api.list_body
                trickle = api.trickle_s
            if body is None:
                body = json.dumps(doc).encode()
            if trickle:
                self._trickle(200, body)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self._watch(query, mine)

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _watch(self, query: dict, mine) -> None:
        api = self.api
        start = int(query.get("resourceVersion") or 0)
        w = _Watch()
        w.bookmarks = query.get("allowWatchBookmarks") == "true"
        with api.lock:
            if start < api.compacted:
                w.end = "gone"
            else:
                w.cond_events.extend(e for v, e in api.history if v > start)
            api.watches.append(w)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        try:
            while True:
                with api.lock:
                    while not w.cond_events and w.end is None:
                        api.lock.wait(0.2)
                    events, w.cond_events = w.cond_events, []
                    end = w.end if not events else None
                for e in events:
                    if isinstance(e, bytes):
                        self._chunk(e + b"\n")
                    elif e["type"] == "BOOKMARK" or mine(e["object"]):
                        self._chunk(json.dumps(e).encode() + b"\n")
                if end == "gone":
                    message = f"too old resource version: {start} ({api.compacted})"
                    self._chunk(json.dumps({"type": "ERROR", "object": status_doc(
                        410, "Expired", message)}).encode() + b"\n")
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                    return
                if end == "drop":
                    # As a load balancer that times out: the stream stops mid-way.
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                if end == "close":
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                    return
        except OSError:
            self.close_connection = True
        finally:
            with api.lock:
                if w.end is None:
                    w.end = "client"


class KubeletServer:
    """The kubelet's ``GET /pods`` over HTTPS on 127.0.0.1 with the given certificate.

    Requests must carry ``Authorization: Bearer <token>`` with the current ``token``;
    others get 401.
    """

    def __init__(self, pods: list[dict], *, cert_file: str, key_file: str, token: str) -> None:
        self.pods = pods
        self.token = token
        self.body: bytes | None = None  # served instead of the PodList when set
        self.lock = threading.Lock()
        self.seen_tokens: list[str | None] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format, *args) -> None:
                pass

            def do_GET(self) -> None:
                auth = self.headers.get("Authorization")
                with server.lock:
                    server.seen_tokens.append(auth)
                    ok = auth == f"Bearer {server.token}"
                    doc = {"kind": "PodList", "apiVersion": "v1", "metadata": {},
                           "items": list(server.pods)}
                    raw = server.body
                if self.path != "/pods":
                    code, body = 404, b"404 page not found\n"
                elif not ok:
                    code, body = 401, b"Unauthorized"
                else:
                    code, body = 200, raw if raw is not None else json.dumps(doc).encode()
                self.send_response(code)
                self.send_header("Content-Type",
                                 "application/json" if code == 200 else "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> KubeletServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def make_certificate(directory: Path, *, common_name: str = "node-a") -> tuple[str, str]:
    """A self-signed serving certificate for 127.0.0.1 (as a kubelet makes its own);
    returns (cert file, key file)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{common_name}@1733300000")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName(common_name), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file = directory / f"{common_name}.crt"
    key_file = directory / f"{common_name}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    os.chmod(key_file, 0o600)
    return str(cert_file), str(key_file)


def wait_for(predicate, timeout_s: float = 15.0) -> bool:
    """Poll ``predicate`` until it is true (True) or ``timeout_s`` passes (False).

    Used to wait for a background thread to catch up; it asserts nothing about speed.
    """
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())
