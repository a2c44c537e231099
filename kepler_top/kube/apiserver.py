"""Pods of this node from the Kubernetes API server: one list, then a watch.

The list and watch ask only for this node's pods (field selector ``spec.nodeName``), as the
kubelet itself does. A watch that expires (``410 Gone``) or whose connection drops is followed
by a new list, after a doubling wait when the server was not reachable.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import socket
import threading
import weakref
from typing import Any, Mapping

import urllib3
import yaml
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException
from kubernetes.config.config_exception import ConfigException

from kepler_top.kube.pods import (
    MAX_LIST_BYTES,
    NotAPod,
    NotAPodList,
    PodIndex,
    json_kind,
    normalize_uid,
    parse_pod,
    parse_pod_list,
)
from kepler_top.kube.worker import Backoff, Notices, SourceThread

log = logging.getLogger(__name__)

_NETWORK_ERRORS = (urllib3.exceptions.HTTPError, OSError)
# What the client raises when a watch line is JSON but not an event (no "type" or "object",
# or an object its models cannot hold).
_EVENT_ERRORS = (ValueError, KeyError, TypeError, AttributeError)




class _OwnFailures(logging.Filter):
    """Drops urllib3's own warnings (with a traceback) about an answer cut short, on the pod
    source's threads: a source cuts a list that is too slow on purpose, and says each
    failure once in its own words."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.threadName.startswith("kepler-top-")


logging.getLogger("urllib3.connection").addFilter(_OwnFailures())


class ConfigUnavailable(Exception):
    """No way to reach a cluster was configured (not in a pod, no kubeconfig).

    Attributes:
        why: what went wrong, without the file's name (the message has both).
    """

    def __init__(self, message: str, why: str | None = None) -> None:
        super().__init__(message)
        self.why = why or message


def load_client(kubeconfig: str | None = None) -> client.ApiClient:
    """An API client from ``kubeconfig``, else the in-cluster service account, else the
    kubeconfig named by ``$KUBECONFIG`` or at ``~/.kube/config``.

    Raises:
        ConfigUnavailable: none of them exists or one cannot be loaded; the message says why.
    """
    cfg = client.Configuration()
    try:
        cfg = _load(kubeconfig, cfg)
    except (ConfigException, OSError, ValueError, TypeError, AttributeError, KeyError,
            yaml.YAMLError) as e:
        where = kubeconfig or "the kubeconfig"
        why = _config_problem(e)
        raise ConfigUnavailable(f"cannot load {where}: {why}", why) from None
    # The sources retry with their own backoff; urllib3's retries would each log a warning,
    # and an unreachable server must be said once.
    cfg.retries = 0
    return client.ApiClient(cfg)


def _config_problem(e: Exception) -> str:
    """What is wrong with a kubeconfig, in words an operator can act on."""
    if isinstance(e, yaml.MarkedYAMLError) and e.problem_mark is not None:
        return f"not valid YAML: {e.problem} at line {e.problem_mark.line + 1}"
    if isinstance(e, yaml.YAMLError):
        return "not valid YAML"
    if isinstance(e, (TypeError, AttributeError, KeyError)):
        # The client indexes into whatever the YAML held; its own errors name Python types.
        return ("not a kubeconfig (expected a mapping with clusters, contexts, users and "
                "current-context)")
    return str(e) or type(e).__name__


def _load(kubeconfig: str | None, cfg: client.Configuration) -> client.Configuration:
    if kubeconfig:
        config.load_kube_config(
            config_file=kubeconfig, client_configuration=cfg, persist_config=False
        )
        return cfg
    try:
        config.load_incluster_config(client_configuration=cfg)
        return cfg
    except ConfigException:
        # Read at call time: the client's own default is fixed when it is first imported.
        default = os.environ.get("KUBECONFIG") or "~/.kube/config"
        paths = [os.path.expanduser(p) for p in default.split(os.pathsep) if p]
        if not any(os.path.exists(p) for p in paths):
            raise ConfigUnavailable(
                f"not running in a pod, and no kubeconfig at {default}"
            ) from None
    config.load_kube_config(
        config_file=os.pathsep.join(paths), client_configuration=cfg, persist_config=False
    )
    return cfg


class ApiServerSource(SourceThread):
    """Keeps a ``PodIndex`` up to date from the API server's list and watch of one node's pods.

    Args:
        index: where the pods go.
        api_client: a configured ``kubernetes`` client (see ``load_client``).
        node_name: only pods with this ``spec.nodeName``.
        notices: problems are said once here.
        backoff: waits between attempts while the server cannot be reached or refuses.
        watch_timeout_s: the server ends each watch after this long; it is then resumed.
        connect_timeout_s: the longest wait for a connection.
        list_timeout_s: the longest a whole list may take, however steadily the server sends;
            a watch may last ``watch_timeout_s`` plus this long.
        read_timeout_s: the longest wait for any byte of a list or a watch.
        max_list_bytes: the largest list answer read (default 32 MiB); a longer one is
            refused as not a pod list.
        max_event_bytes: the longest watch line read (default 8 MiB); a longer one ends the
            watch, said once, and the pods are listed again.
    """

    name = "apiserver"
    asks_cluster = True

    def __init__(
        self,
        index: PodIndex,
        *,
        api_client: client.ApiClient,
        node_name: str,
        notices: Notices | None = None,
        backoff: Backoff | None = None,
        watch_timeout_s: int = 300,
        connect_timeout_s: float = 10.0,
        list_timeout_s: float = 60.0,
        read_timeout_s: float = 60.0,
        max_list_bytes: int | None = None,
        max_event_bytes: int | None = None,
    ) -> None:
        super().__init__()
        self.index = index
        self.api = client.CoreV1Api(api_client)
        self.host = api_client.configuration.host
        self.node_name = node_name
        self.notices = notices or Notices()
        self.backoff = backoff or Backoff(1.0, 60.0)
        self.watch_timeout_s = watch_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.list_timeout_s = list_timeout_s
        self.read_timeout_s = read_timeout_s
        self.max_list_bytes = max_list_bytes or MAX_LIST_BYTES
        self.max_event_bytes = max_event_bytes or MAX_EVENT_BYTES
        self.lists = 0  # full lists received, for tests and the bench
        self._watch: watch.Watch | None = None
        self._connections = _Connections(api_client)

    @property
    def selector(self) -> str:
        """The field selector that keeps the list and watch to this node's pods."""
        return f"spec.nodeName={self.node_name}"

    def run_forever(self) -> None:
        """List, then watch until the watch must be listed again; wait by the backoff after
        a failure."""
        while not self.stopping:
            try:
                version = self.list_once()
            except ApiException as e:
                self._refused(e)
            except ListTooSlow:
                self._too_slow()
            except NotAPodList as e:
                self._not_a_pod_list(e)
            except _NETWORK_ERRORS as e:
                if self.stopping:
                    return
                self._unreachable(e)
            else:
                self.backoff.reset()
                self.notices.clear("apiserver",
                                   f"pod names: the API server at {self.host} answers")
                self.notices.clear(f"{self.name}-failed",
                                   f"pod names: the {self.name} pod source works again")
                self._watch_from(version)
                continue
            if self.wait(self.backoff.next()):
                return

    def list_once(self) -> str | None:
        """List this node's pods into the index; returns the list's resourceVersion.

        Raises:
            ApiException: the server refused (the status says why).
            ListTooSlow: the whole list took longer than ``list_timeout_s``.
            NotAPodList: the answer is not JSON, or not shaped as a PodList.
        """
        with _Deadline(self.list_timeout_s, self._connections) as deadline:
            try:
                resp = self.api.list_pod_for_all_namespaces(
                    field_selector=self.selector,
                    _preload_content=False,
                    _request_timeout=(self.connect_timeout_s, self.read_timeout_s),
                )
                try:
                    if not 200 <= resp.status <= 299:
                        raise ApiException(status=resp.status, reason=resp.reason or "")
                    data = self._read_capped(resp)
                finally:
                    resp.release_conn()
            except _NETWORK_ERRORS:
                if deadline.passed:
                    raise ListTooSlow() from None
                raise
        try:
            doc = json.loads(data)
        except ValueError as e:
            if deadline.passed:  # cut short, yet ended as if complete
                raise ListTooSlow() from None
            raise NotAPodList(f"not JSON: {_short(e)}") from None
        self.index.replace_all(parse_pod_list(doc, skipped=self._skipped))
        self.lists += 1
        version = _version(doc)
        log.debug("listed %d pods of node %s at version %s", len(doc.get("items") or ()),
                  self.node_name, version)
        return version

    def _read_capped(self, resp) -> bytes:
        # A node's pod list is a few megabytes at most (110 pods, each rarely over 100 kB
        # even with big annotations); an answer that keeps coming would otherwise grow until
        # the DaemonSet's memory limit kills the exporter, and then again after each restart.
        chunks, size = [], 0
        for chunk in resp.stream(1 << 16):
            size += len(chunk)
            if size > self.max_list_bytes:
                raise NotAPodList(f"longer than {self.max_list_bytes >> 20} MiB, more than "
                                  "any node's pod list")
            chunks.append(chunk)
        return b"".join(chunks)

    def _watch_from(self, version: str | None) -> None:
        """Follow the watch from ``version`` until it must be listed again (or stop)."""
        while not self.stopping:
            self._watch = w = _Watch(self.max_event_bytes)
            # The server ends the watch at timeout_seconds; one that sends past it (or keeps a
            # trickle going) is cut, so that no read waits forever.
            limit = self.watch_timeout_s + self.list_timeout_s
            deadline = _Deadline(limit, self._connections).start()
            try:
                # The client turns the event stream into model objects as well; `raw_object`
                # is the document as served, which is what parse_pod reads.
                for event in w.stream(
                    self.api.list_pod_for_all_namespaces,
                    field_selector=self.selector,
                    resource_version=version,
                    allow_watch_bookmarks=True,
                    timeout_seconds=self.watch_timeout_s,
                    _request_timeout=(self.connect_timeout_s, self.read_timeout_s),
                ):
                    version = self._apply(event) or version
                    if self.stopping:
                        return
            except ApiException as e:
                if e.status == 410:
                    log.info("pod watch expired at version %s (410 Gone): listing again", version)
                else:
                    self._refused(e)
                    self.wait(self.backoff.next())
                return
            except _NETWORK_ERRORS as e:
                if not self.stopping:
                    if deadline.passed:
                        log.info("pod watch outlived its %d s deadline: listing again", limit)
                    else:
                        log.info("pod watch connection dropped (%s): listing again",
                                 _reason(e))
                    self.wait(self.backoff.next())
                return
            except _EVENT_ERRORS as e:
                # The client's own parsing of a line failed and ended the stream.
                if not self.stopping:
                    self.notices.problem(
                        "apiserver-skipped",
                        f"pod names: the API server at {self.host} sent a watch line the "
                        f"client could not read ({type(e).__name__}: {_short(e)}); listing "
                        "again",
                    )
                    self.wait(self.backoff.next())
                return
            finally:
                deadline.cancel()
                self._watch = None
            # The server ended the watch at its timeout: resume from the last version seen.

    def _apply(self, event: Any) -> str | None:
        """Apply one watch event to the index; returns its resourceVersion, if any. An event
        of the wrong shape is skipped and said once."""
        if event is None:  # a blank line: nothing to skip
            return None
        if not isinstance(event, Mapping):
            self._skipped(f"a watch line that is {json_kind(event)}, not an event")
            return None
        kind = event.get("type")
        if kind == _NOT_JSON:
            self._skipped(f"a watch line that is not JSON ({event['line']!r})")
            return None
        obj = event.get("raw_object")
        if not isinstance(obj, Mapping):
            self._skipped(f"a {kind} watch event whose object is not an object")
            return None
        meta = obj.get("metadata")
        if meta is not None and not isinstance(meta, Mapping):
            self._skipped(f"a {kind} watch event whose metadata is not an object")
            return None
        meta = meta or {}
        version = _version(obj)
        if kind in ("ADDED", "MODIFIED"):
            try:
                rec = parse_pod(obj)
            except NotAPod as e:
                self._skipped(f"a {kind} watch event: {e}")
                return version
            if rec is not None:
                self.index.upsert(rec)
        elif kind == "DELETED":
            uid = meta.get("uid")
            if isinstance(uid, str) and uid:
                self.index.delete(normalize_uid(uid))
        elif kind != "BOOKMARK":  # BOOKMARK carries only a newer resourceVersion
            self._skipped(f"a watch event of unknown type {str(kind)[:40]!r}")
        return version

    def _interrupt(self) -> None:
        w = self._watch
        if w is not None:
            w.stop()
        # A list, or a watch still waiting for its headers, has no Watch to stop: cut the
        # connections themselves, so that stop() does not wait for a hung server.
        self._connections.close()

    def _refused(self, e: ApiException) -> None:
        if e.status in (401, 403):
            self.notices.problem(
                "apiserver",
                f"pod names: the API server at {self.host} refuses to list pods of node "
                f"{self.node_name} ({e.status} {e.reason}): grant list and watch on pods "
                "(README, 'RBAC'); showing pod UIDs meanwhile",
            )
        else:
            self.notices.problem(
                "apiserver",
                f"pod names: the API server at {self.host} answered {e.status} {e.reason}; "
                "showing pod UIDs and retrying",
            )

    def _too_slow(self) -> None:
        self.notices.problem(
            "apiserver",
            f"pod names: the API server at {self.host} is too slow: no whole pod list within "
            f"{self.list_timeout_s:g} s; showing pod UIDs and retrying",
        )

    def _not_a_pod_list(self, e: NotAPodList) -> None:
        self.notices.problem(
            "apiserver",
            f"pod names: the API server at {self.host} answered something that is not a pod "
            f"list ({e}); showing pod UIDs and retrying",
        )

    def _skipped(self, what: str) -> None:
        self.notices.problem(
            "apiserver-skipped",
            f"pod names: skipped {what} from the API server at {self.host}; "
            "said once, the other pods are used",
        )

    def _unreachable(self, e: Exception) -> None:
        self.notices.problem(
            "apiserver",
            f"pod names: cannot reach the API server at {self.host} ({_reason(e)}); "
            "showing pod UIDs and retrying",
        )


_NOT_JSON = "kepler-top: not JSON"


# The longest watch line read. etcd refuses objects over 1.5 MiB, so one event is well under
# this; a line that keeps coming without its newline would otherwise be buffered whole.
MAX_EVENT_BYTES = 8 << 20


class WatchLineTooLong(ValueError):
    """A watch line ran past MAX_EVENT_BYTES without its newline."""


class _Watch(watch.Watch):
    """The client's watch, telling a line that is not JSON from a blank one (the client
    yields None for both), and reading no line longer than ``max_line_bytes``."""

    def __init__(self, max_line_bytes: int = MAX_EVENT_BYTES) -> None:
        super().__init__()
        self.max_line_bytes = max_line_bytes

    def stream(self, func, *args, **kwargs):
        cap = self.max_line_bytes

        @functools.wraps(func)  # the client reads the return type from its docstring
        def capped(*a, **kw):
            return _CappedResponse(func(*a, **kw), cap)

        return super().stream(capped, *args, **kwargs)

    def unmarshal_event(self, data: str, return_type: Any) -> Any:
        event = super().unmarshal_event(data, return_type)
        if event is None and data and not data.isspace():
            return {"type": _NOT_JSON, "line": data[:60]}
        return event


class _CappedResponse:
    """A watch response whose ``stream`` fails once a line runs past ``cap`` bytes."""

    # Limitation: urllib3 hands over a chunked answer a whole chunk at a time, so a single
    # chunk larger than the cap is in memory before it is refused; servers send events in
    # chunks of their own size, and a stream of small chunks is what is cut here.

    def __init__(self, resp: Any, cap: int) -> None:
        self._resp = resp
        self._cap = cap

    def __getattr__(self, name: str) -> Any:
        return getattr(self._resp, name)

    def stream(self, *args, **kwargs):
        pending = 0  # bytes of the line under way, since the last newline
        for segment in self._resp.stream(*args, **kwargs):
            newline = b"\n" if isinstance(segment, bytes) else "\n"
            first = segment.find(newline)
            longest = pending + (len(segment) if first < 0 else first)
            if first >= 0:
                pending = len(segment) - segment.rfind(newline) - 1
            else:
                pending = longest
            if longest > self._cap or pending > self._cap:
                raise WatchLineTooLong(f"a watch line longer than {self._cap >> 20} MiB")
            yield segment


class ListTooSlow(Exception):
    """The whole list took longer than its deadline, however steadily bytes came."""


def _version(doc: Mapping[str, Any]) -> str | None:
    meta = doc.get("metadata")
    version = meta.get("resourceVersion") if isinstance(meta, Mapping) else None
    return version if isinstance(version, str) and version else None


class _Connections:
    """The open connections of one API client, so that a deadline or ``stop()`` can cut a
    read in progress (urllib3's read timeout restarts with every byte that arrives)."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self._live: weakref.WeakSet = weakref.WeakSet()
        self._lock = threading.Lock()
        self._closed = False
        manager = getattr(getattr(api_client, "rest_client", None), "pool_manager", None)
        classes = getattr(manager, "pool_classes_by_scheme", None)
        if not isinstance(classes, dict):
            # Limitation: with a client built otherwise (a SOCKS proxy), a hung read is cut
            # only by the read timeout, and stop() waits for it.
            return
        manager.pool_classes_by_scheme = {
            scheme: self._tracking(pool_cls) for scheme, pool_cls in classes.items()
        }

    def _tracking(self, pool_cls: type) -> type:
        conns = self

        class Tracked(pool_cls.ConnectionCls):  # type: ignore[name-defined,misc]
            def connect(self) -> None:
                super().connect()
                with conns._lock:
                    conns._live.add(self)
                    closed = conns._closed
                if closed:  # stop() came while this connection was being made
                    conns.cut()

        # urllib3 names the connection's class in its errors, which reach the warnings.
        Tracked.__name__ = Tracked.__qualname__ = pool_cls.ConnectionCls.__name__
        return type(f"Tracked{pool_cls.__name__}", (pool_cls,), {"ConnectionCls": Tracked})

    def close(self) -> None:
        """Cut every connection, now and any made from now on (the source is stopping)."""
        with self._lock:
            self._closed = True
        self.cut()

    def cut(self) -> None:
        """Shut every open connection down; a read blocked on one returns at once."""
        with self._lock:
            live = list(self._live)
        for conn in live:
            sock = getattr(conn, "sock", None)
            if sock is None:
                continue
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Deadline:
    """Cuts ``connections`` when ``seconds`` pass before ``cancel()``; ``passed`` says so."""

    def __init__(self, seconds: float, connections: _Connections) -> None:
        self.passed = False
        self._connections = connections
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def _fire(self) -> None:
        self.passed = True
        self._connections.cut()

    def start(self) -> _Deadline:
        self._timer.start()
        return self

    def cancel(self) -> None:
        self._timer.cancel()

    def __enter__(self) -> _Deadline:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cancel()


def _short(e: Exception) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _reason(e: Exception) -> str:
    reason = getattr(e, "reason", None)
    text = str(reason if reason is not None else e) or type(e).__name__
    return text if len(text) <= 200 else text[:197] + "..."
