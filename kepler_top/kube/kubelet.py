"""Pods of this node from the kubelet's own ``/pods`` endpoint, polled over HTTPS.

This spares the API server: each node asks only its kubelet. The service account's token is
read again before every poll, since the kubelet-issued projected token rotates (hourly by
default) and a token read once at start-up stops working.
"""

from __future__ import annotations

import json
import logging
import ssl
import urllib.error
import urllib.request

from kepler_top.kube.pods import MAX_LIST_BYTES, NotAPodList, PodIndex, parse_pod_list
from kepler_top.kube.worker import Backoff, Notices, SourceThread

log = logging.getLogger(__name__)

SERVICE_ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
TOKEN_FILE = f"{SERVICE_ACCOUNT}/token"
CA_FILE = f"{SERVICE_ACCOUNT}/ca.crt"
DEFAULT_URL = "https://127.0.0.1:10250"


class KubeletSource(SourceThread):
    """Keeps a ``PodIndex`` up to date by polling ``<url>/pods`` every ``poll_s`` seconds.

    Args:
        url: the kubelet's HTTPS address, without the path.
        token_file: the bearer token, re-read each poll; no header when the file is absent.
        ca_file: the CA that signed the kubelet's serving certificate; None for the system's.
        insecure: accept any certificate (kubelets often serve a self-signed one).
        poll_s: seconds between polls (Kepler polls every 15 s).
    """

    name = "kubelet"
    asks_cluster = True

    def __init__(
        self,
        index: PodIndex,
        *,
        url: str = DEFAULT_URL,
        token_file: str | None = TOKEN_FILE,
        ca_file: str | None = CA_FILE,
        insecure: bool = False,
        poll_s: float = 15.0,
        timeout_s: float = 10.0,
        notices: Notices | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        super().__init__()
        self.index = index
        self.url = url.rstrip("/") + "/pods"
        self.token_file = token_file
        self.ca_file = ca_file
        self.insecure = insecure
        self.poll_s = poll_s
        self.timeout_s = timeout_s
        self.notices = notices or Notices()
        self.backoff = backoff or Backoff(poll_s, max(poll_s, 120.0))
        self.polls = 0  # successful polls, for tests

    def run_forever(self) -> None:
        """Poll every ``poll_s``; after a failure, wait by the backoff instead."""
        while not self.stopping:
            wait = self.poll_s if self.poll_once() else self.backoff.next()
            if self.wait(wait):
                return

    def poll_once(self) -> bool:
        """One GET of /pods into the index; False (and said once) when it failed."""
        try:
            context = self._tls()
        except (OSError, ssl.SSLError) as e:
            self._problem(f"cannot use CA file {self.ca_file} ({e}): give --kubelet-ca FILE")
            return False
        request = urllib.request.Request(self.url, headers={"Accept": "application/json"})
        token = self._token()
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s, context=context) as r:
                # Capped as the API server's list is: an answer that keeps coming must not
                # grow until the memory limit kills us.
                data = r.read(MAX_LIST_BYTES + 1)
            if len(data) > MAX_LIST_BYTES:
                self._problem(f"{self.url} answered something that is not a pod list (longer "
                              f"than {MAX_LIST_BYTES >> 20} MiB, more than any node's pod list)")
                return False
        except urllib.error.HTTPError as e:
            hint = ("grant get on nodes/pods, or nodes/proxy before Kubernetes 1.33 "
                    "(README, 'RBAC')" if e.code in (401, 403)
                    else "check --kubelet-url")
            self._problem(f"{self.url} answered {e.code} {e.reason}: {hint}")
            return False
        except urllib.error.URLError as e:
            if isinstance(e.reason, ssl.SSLCertVerificationError):
                self._problem(f"cannot verify the certificate of {self.url} "
                              f"({e.reason.verify_message}): give --kubelet-ca FILE, or "
                              "--kubelet-insecure-tls")
            else:
                self._problem(f"cannot reach {self.url} ({e.reason})")
            return False
        except (OSError, ValueError) as e:
            self._problem(f"cannot read pods from {self.url} ({e})")
            return False
        try:
            records = parse_pod_list(json.loads(data), skipped=self._skipped)
        except ValueError as e:  # not JSON, or NotAPodList
            why = str(e) if isinstance(e, NotAPodList) else f"not JSON: {e}"
            self._problem(f"{self.url} answered something that is not a pod list ({why})")
            return False
        self.index.replace_all(records)
        self.polls += 1
        self.backoff.reset()
        self.notices.clear("kubelet", f"pod names: the kubelet at {self.url} answers")
        self.notices.clear(f"{self.name}-failed",
                           f"pod names: the {self.name} pod source works again")
        return True

    def _token(self) -> str | None:
        if not self.token_file:
            return None
        try:
            with open(self.token_file, encoding="utf-8") as f:
                return f.read().strip() or None
        except OSError:
            return None

    def _tls(self) -> ssl.SSLContext:
        if self.insecure:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            return context
        return ssl.create_default_context(cafile=self.ca_file)

    def _skipped(self, why: str) -> None:
        self.notices.problem("kubelet-skipped", f"pod names: skipped a pod from {self.url} "
                             f"({why}); said once, the other pods are used")

    def _problem(self, message: str) -> None:
        self.notices.problem("kubelet", f"pod names: {message}; showing pod UIDs meanwhile")
