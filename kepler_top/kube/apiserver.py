"""Pods of this node from the Kubernetes API server: one list, then a watch.

The list and watch ask only for this node's pods (field selector ``spec.nodeName``), as the
kubelet itself does. A watch that expires (``410 Gone``) or whose connection drops is followed
by a new list, after a doubling wait when the server was not reachable.
"""

from __future__ import annotations

import json
import logging
import os

import urllib3
import yaml
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException
from kubernetes.config.config_exception import ConfigException

from kepler_top.kube.pods import PodIndex, normalize_uid, parse_pod, parse_pod_list
from kepler_top.kube.worker import Backoff, Notices, SourceThread

log = logging.getLogger(__name__)

_NETWORK_ERRORS = (urllib3.exceptions.HTTPError, OSError)


class ConfigUnavailable(Exception):
    """No way to reach a cluster was configured (not in a pod, no kubeconfig)."""


def load_client(kubeconfig: str | None = None) -> client.ApiClient:
    """An API client from ``kubeconfig``, else the in-cluster service account, else the
    kubeconfig named by ``$KUBECONFIG`` or at ``~/.kube/config``.

    Raises:
        ConfigUnavailable: none of them exists or one cannot be loaded; the message says why.
    """
    cfg = client.Configuration()
    try:
        cfg = _load(kubeconfig, cfg)
    except (ConfigException, OSError, ValueError, TypeError, yaml.YAMLError) as e:
        where = kubeconfig or "the kubeconfig"
        raise ConfigUnavailable(f"cannot load {where}: {e}") from None
    # The sources retry with their own backoff; urllib3's retries would each log a warning,
    # and an unreachable server must be said once.
    cfg.retries = 0
    return client.ApiClient(cfg)


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
    """

    name = "apiserver"

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
        self.lists = 0  # full lists received, for tests and the bench
        self._watch: watch.Watch | None = None

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
                if self.wait(self.backoff.next()):
                    return
                continue
            except _NETWORK_ERRORS + (ValueError,) as e:
                self._unreachable(e)
                if self.wait(self.backoff.next()):
                    return
                continue
            self.backoff.reset()
            self.notices.clear("apiserver", f"pod names: the API server at {self.host} answers")
            self._watch_from(version)

    def list_once(self) -> str | None:
        """List this node's pods into the index; returns the list's resourceVersion."""
        resp = self.api.list_pod_for_all_namespaces(
            field_selector=self.selector,
            _preload_content=False,
            _request_timeout=(self.connect_timeout_s, 60.0),
        )
        try:
            if not 200 <= resp.status <= 299:
                raise ApiException(status=resp.status, reason=resp.reason or "")
            doc = json.loads(resp.data)
        finally:
            resp.release_conn()
        self.index.replace_all(parse_pod_list(doc))
        self.lists += 1
        version = (doc.get("metadata") or {}).get("resourceVersion")
        log.debug("listed %d pods of node %s at version %s", len(doc.get("items") or ()),
                  self.node_name, version)
        return version

    def _watch_from(self, version: str | None) -> None:
        """Follow the watch from ``version`` until it must be listed again (or stop)."""
        while not self.stopping:
            self._watch = w = watch.Watch()
            try:
                # The client turns the event stream into model objects as well; `raw_object`
                # is the document as served, which is what parse_pod reads.
                for event in w.stream(
                    self.api.list_pod_for_all_namespaces,
                    field_selector=self.selector,
                    resource_version=version,
                    allow_watch_bookmarks=True,
                    timeout_seconds=self.watch_timeout_s,
                    _request_timeout=(self.connect_timeout_s, self.watch_timeout_s + 30),
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
            except _NETWORK_ERRORS + (ValueError,) as e:
                if not self.stopping:
                    log.info("pod watch connection dropped (%s): listing again", _reason(e))
                    self.wait(self.backoff.next())
                return
            finally:
                self._watch = None
            # The server ended the watch at its timeout: resume from the last version seen.

    def _apply(self, event: dict) -> str | None:
        kind = event.get("type")
        obj = event.get("raw_object") or {}
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if kind in ("ADDED", "MODIFIED"):
            rec = parse_pod(obj)
            if rec is not None:
                self.index.upsert(rec)
        elif kind == "DELETED":
            uid = (obj.get("metadata") or {}).get("uid")
            if uid:
                self.index.delete(normalize_uid(uid))
        # BOOKMARK carries only a newer resourceVersion.
        return version

    def _interrupt(self) -> None:
        w = self._watch
        if w is not None:
            w.stop()

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

    def _unreachable(self, e: Exception) -> None:
        self.notices.problem(
            "apiserver",
            f"pod names: cannot reach the API server at {self.host} ({_reason(e)}); "
            "showing pod UIDs and retrying",
        )


def _reason(e: Exception) -> str:
    reason = getattr(e, "reason", None)
    text = str(reason if reason is not None else e) or type(e).__name__
    return text if len(text) <= 200 else text[:197] + "..."
