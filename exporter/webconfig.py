"""The web config file of Prometheus exporters (exporter-toolkit's format): TLS, basic auth.

```yaml
tls_server_config:
  cert_file: server.crt          # paths are relative to this file
  key_file: server.key
  client_ca_file: ca.crt         # optional: with client_auth_type, verify client certificates
  client_auth_type: RequireAndVerifyClientCert
  min_version: TLS12
basic_auth_users:
  alice: $2y$10$...              # bcrypt hash (htpasswd -nBC 10 alice)
```
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import re
import ssl
import threading
from dataclasses import dataclass, field
from typing import Any, Mapping

from kepler_top.errors import KeplerTopError
from kepler_top.exporter.logs import event

log = logging.getLogger(__name__)

_TLS_KEYS = {"cert_file", "key_file", "client_ca_file", "client_auth_type", "min_version",
             "max_version"}
_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
# $2a$/$2b$/$2y$, a two-digit cost of 04..31, 22 characters of salt and 31 of hash.
_BCRYPT = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")
_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3,
}


@dataclass(frozen=True)
class WebConfig:
    """TLS context (or None for plain HTTP) and basic-auth users with bcrypt hashes."""

    tls: ssl.SSLContext | None = None
    users: Mapping[str, bytes] = field(default_factory=dict)


def _fail(path: str, what: str) -> KeplerTopError:
    return KeplerTopError(f"--web-config-file {path}: {what}",
                          "fix the file (see README, 'Exporter: TLS and basic auth')")


def load(path: str) -> WebConfig:
    """Read and check a web config file; every problem is one KeplerTopError naming it."""
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except OSError as e:
        raise KeplerTopError(f"--web-config-file {path}: cannot read: {e.strerror}",
                             "give the path of a readable web config file") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise _fail(path, f"not YAML ({str(e).splitlines()[0]})") from None
    if doc is None:
        # exporter-toolkit takes an empty file as "no TLS, no auth"; so do we, but aloud.
        event(log, logging.WARNING, "web_config_empty", file=path,
              meaning="no TLS and no basic auth: /metrics is open over plain HTTP")
        return WebConfig()
    if not isinstance(doc, dict):
        raise _fail(path, "the top level must be a mapping")
    unknown = set(doc) - {"tls_server_config", "basic_auth_users"}
    if unknown:
        raise _fail(path, f"unsupported key {sorted(unknown)[0]!r}")
    for key in ("tls_server_config", "basic_auth_users"):
        if key in doc and not doc[key]:
            # Written but empty: whoever wrote it wanted TLS or auth; serving without is wrong.
            raise _fail(path, f"{key} is empty; fill it in or remove the key")
    base = os.path.dirname(os.path.abspath(path))
    tls = _tls(path, base, doc.get("tls_server_config"))
    users = _users(path, doc.get("basic_auth_users"))
    return WebConfig(tls, users)


def _tls(path: str, base: str, conf: Any) -> ssl.SSLContext | None:
    if conf is None:
        return None
    if not isinstance(conf, dict):
        raise _fail(path, "tls_server_config must be a mapping")
    unknown = set(conf) - _TLS_KEYS
    if unknown:
        raise _fail(path, f"unsupported key tls_server_config.{sorted(unknown)[0]}")
    for key in ("cert_file", "key_file", "client_ca_file", "client_auth_type", "min_version",
                "max_version"):
        if key in conf and not isinstance(conf[key], str):
            raise _fail(path, f"tls_server_config.{key} must be a string, not "
                        f"{type(conf[key]).__name__}")
    if not conf.get("cert_file") or not conf.get("key_file"):
        raise _fail(path, "tls_server_config needs cert_file and key_file")

    def where(name: str) -> str:
        return os.path.join(base, str(conf[name]))

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    for key, attr in (("min_version", "minimum_version"), ("max_version", "maximum_version")):
        if key in conf:
            if conf[key] not in _VERSIONS:
                raise _fail(path, f"tls_server_config.{key} must be one of {', '.join(_VERSIONS)}")
            setattr(ctx, attr, _VERSIONS[conf[key]])
    if "min_version" in conf and "max_version" in conf and \
            _VERSIONS[conf["min_version"]] > _VERSIONS[conf["max_version"]]:
        raise _fail(path, f"tls_server_config.min_version {conf['min_version']} is above "
                    f"max_version {conf['max_version']}")
    cert, key = where("cert_file"), where("key_file")
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise _fail(path, f"cannot load cert_file {cert} with key_file {key}: {reason}") \
            from None
    mode = conf.get("client_auth_type", "NoClientCert")
    if mode not in _CLIENT_AUTH:
        raise _fail(path, f"client_auth_type must be one of {', '.join(_CLIENT_AUTH)}")
    ctx.verify_mode = _CLIENT_AUTH[mode]
    if mode != "NoClientCert":
        if not conf.get("client_ca_file"):
            raise _fail(path, f"client_auth_type {mode} needs client_ca_file")
        try:
            ctx.load_verify_locations(where("client_ca_file"))
        except (OSError, ssl.SSLError) as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            raise _fail(path, f"cannot load client_ca_file {where('client_ca_file')}: "
                        f"{reason}") from None
    return ctx


def _users(path: str, conf: Any) -> dict[str, bytes]:
    if conf is None:
        return {}
    if not isinstance(conf, dict):
        raise _fail(path, "basic_auth_users must be a mapping of user name to bcrypt hash")
    users = {}
    for name, hashed in conf.items():
        if not isinstance(hashed, str) or not _BCRYPT.fullmatch(hashed):
            raise _fail(path, f"basic_auth_users.{name} is not a bcrypt hash "
                        "($2y$10$ and 53 characters, as htpasswd -nBC 10 writes)")
        users[str(name)] = hashed.encode("ascii", "replace")
    return users


class BasicAuth:
    """Checks an ``Authorization`` header against bcrypt hashes.

    bcrypt is slow on purpose (tens of milliseconds); a success is remembered by a salted
    digest of the header so that every scrape does not pay it again.
    """

    def __init__(self, users: Mapping[str, bytes]) -> None:
        self.users = dict(users)
        self._salt = os.urandom(16)
        self._good: set[bytes] = set()
        self._lock = threading.Lock()

    def check(self, header: str | None) -> bool:
        """True when the header names a user with the right password."""
        import bcrypt

        if not header or not header.startswith("Basic "):
            return False
        digest = hmac.new(self._salt, header.encode("utf-8", "replace"), hashlib.sha256).digest()
        with self._lock:
            if digest in self._good:
                return True
        try:
            user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        hashed = self.users.get(user)
        if hashed is None:
            return False
        try:
            ok = bcrypt.checkpw(password.encode("utf-8"), hashed)
        except ValueError:
            return False
        if ok:
            with self._lock:
                if len(self._good) < 1000:
                    self._good.add(digest)
        return ok
