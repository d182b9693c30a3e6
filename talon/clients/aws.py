"""AWS access: one boto3 session per process, shared clients, and the instance metadata.

Layer L1. Credentials, in order: the static `aws.access_key`/`aws.secret_key`; else the SDK's
default chain (environment, shared files, container or instance role). With `aws.role_arn`
those credentials assume the role through STS (with `aws.external_id` when set) and the
role's credentials are refreshed by botocore before they expire. The region is
`aws.region`, else the SDK's. The SDK's own environment (AWS_ENDPOINT_URL, AWS_PROFILE, …)
is honoured as usual. Clients are built under a lock (a boto3 Session is not thread-safe)
and then shared by all worker threads (boto3 clients are). `Imds` reads the EC2 instance
metadata over IMDSv2 with urllib (no SDK, no proxy) and caches what it read.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from talon.config import AwsSettings
from talon.errors import TalonError

SESSION_NAME = "talon"
ROLE_SECONDS = 3600
"""Lifetime asked for the assumed role's credentials (botocore refreshes them earlier)."""


class AwsError(TalonError):
    """An AWS call failed (the message names the target and the service's own error)."""


ERROR_CHARS = 500
"""Longest service message kept in an error (an unexpected body can be a whole page)."""


def error_text(exc: BaseException) -> str:
    """The service's code and message for a botocore ClientError, else the exception text,
    on one line and at most ERROR_CHARS long."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        err = response.get("Error") or {}
        code, message = err.get("Code", ""), err.get("Message", "")
        status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        text = ": ".join(p for p in (str(code), str(message)) if p) or type(exc).__name__
        text = " ".join(text.split())[:ERROR_CHARS]
        return f"{text} (HTTP {status})" if status else text
    return " ".join((str(exc) or type(exc).__name__).split())[:ERROR_CHARS]


class _UnauthorizedError(AwsError):
    """The instance metadata refused the token (HTTP 401)."""


class Aws:
    """The process's boto3 session and its clients, one per (service, region, read timeout)."""

    def __init__(self, settings: AwsSettings, *, timeout: float) -> None:
        self.settings = settings
        self.timeout = timeout
        self._lock = threading.Lock()
        self._session: Any = None
        self._clients: dict[tuple[str, str, float], Any] = {}

    def client(self, service: str, region: str = "", read_timeout: float = 0.0) -> Any:
        """A shared client of `service` (in `region`, else the configured one)."""
        key = (service, region, read_timeout or self.timeout)
        with self._lock:
            if key not in self._clients:
                self._clients[key] = self._build(*key)
            return self._clients[key]

    def close(self) -> None:
        """Close every client's connections (the session stays usable)."""
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()

    def _build(self, service: str, region: str, read_timeout: float) -> Any:
        if self._session is None:
            self._session = self._new_session()
        return self._session.client(service, region_name=region or None,
                                    config=self._config(read_timeout))

    def _config(self, read_timeout: float) -> Any:
        """Timeouts and one attempt: a request is never sent again behind the caller's
        back (a read timeout retried would invoke a Lambda function twice); rules retry
        transient failures with `retries`, within the action timeout."""
        from botocore.config import Config

        return Config(connect_timeout=self.timeout, read_timeout=read_timeout,
                      retries={"total_max_attempts": 1, "mode": "standard"},
                      user_agent_extra="talon")

    def _base_session(self) -> Any:
        import boto3

        s = self.settings
        if s.access_key and s.secret_key:
            return boto3.Session(aws_access_key_id=s.access_key,
                                 aws_secret_access_key=s.secret_key,
                                 region_name=s.region or None)
        return boto3.Session(region_name=s.region or None)

    def _new_session(self) -> Any:
        base = self._base_session()
        if not self.settings.role_arn:
            return base
        import boto3
        import botocore.session
        from botocore.credentials import DeferredRefreshableCredentials

        sts = base.client("sts", config=self._config(self.timeout))
        core = botocore.session.get_session()
        core._credentials = DeferredRefreshableCredentials(  # the documented recipe
            refresh_using=self._assume(sts), method="sts-assume-role")
        if base.region_name:
            core.set_config_variable("region", base.region_name)
        return boto3.Session(botocore_session=core)

    def _assume(self, sts: Any) -> Callable[[], dict[str, str]]:
        """A function returning fresh credentials of `aws.role_arn` (botocore's format)."""
        def fetch() -> dict[str, str]:
            kwargs = {"RoleArn": self.settings.role_arn, "RoleSessionName": SESSION_NAME,
                      "DurationSeconds": ROLE_SECONDS}
            if self.settings.external_id:
                kwargs["ExternalId"] = self.settings.external_id
            try:
                creds = sts.assume_role(**kwargs)["Credentials"]
            except Exception as exc:
                raise AwsError(f"cannot assume the role '{self.settings.role_arn}': "
                               f"{error_text(exc)}") from exc
            return {"access_key": creds["AccessKeyId"], "secret_key": creds["SecretAccessKey"],
                    "token": creds["SessionToken"],
                    "expiry_time": creds["Expiration"].isoformat()}
        return fetch


# --- instance metadata (IMDSv2) --------------------------------------------------------

IMDS_ENDPOINT = "http://169.254.169.254"
TOKEN_SECONDS = 21600
FACTS_SECONDS = 300.0
"""How long the instance facts are reused before being read again."""
_PATHS = {"aws.instance_id": "meta-data/instance-id",
          "aws.region": "meta-data/placement/region",
          "aws.availability_zone": "meta-data/placement/availability-zone"}


class Imds:
    """Reads and caches the instance's facts; thread-safe; `clock` is injectable."""

    def __init__(self, *, endpoint: str = "", timeout: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.endpoint = (endpoint or os.environ.get("AWS_EC2_METADATA_SERVICE_ENDPOINT")
                         or IMDS_ENDPOINT).rstrip("/")
        if not self.endpoint.startswith(("http://", "https://")):
            raise AwsError(f"instance metadata endpoint '{self.endpoint}' is not http(s)")
        self.timeout, self.clock = timeout, clock
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self._lock = threading.Lock()
        self._facts: dict[str, str] = {}
        self._read_at = float("-inf")
        self._token, self._token_until = "", float("-inf")

    def facts(self) -> dict[str, str]:
        """Instance id, region, zone and instance profile (ARN, id); cached FACTS_SECONDS."""
        with self._lock:
            if self.clock() - self._read_at >= FACTS_SECONDS:
                self._facts = self._read_all()
                self._read_at = self.clock()
            return dict(self._facts)

    def _read_all(self) -> dict[str, str]:
        found = {key: self._get(path) or "" for key, path in _PATHS.items()}
        info = self._get("meta-data/iam/info")
        if info:  # 404 when no instance profile is attached
            try:
                data = json.loads(info)
            except ValueError as exc:
                raise AwsError(f"instance metadata at {self.endpoint}: iam/info is not "
                               "JSON") from exc
            found["aws.instance_profile_arn"] = str(data.get("InstanceProfileArn") or "")
            found["aws.instance_profile_id"] = str(data.get("InstanceProfileId") or "")
        return {k: v for k, v in found.items() if v}

    def _request(self, req: urllib.request.Request) -> str | None:
        """The body of `req`; None on 404; AwsError on anything else that fails."""
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                return str(resp.read(65536).decode("utf-8", "replace"))
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            what = req.full_url[len(self.endpoint):]
            error = _UnauthorizedError if exc.code == 401 else AwsError
            raise error(f"instance metadata at {self.endpoint}: {what} answered "
                        f"HTTP {exc.code}") from exc
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise AwsError(f"instance metadata at {self.endpoint} is unreachable: "
                           f"{reason}") from exc

    def _token_value(self) -> str:
        if self.clock() >= self._token_until:
            req = urllib.request.Request(  # noqa: S310 - http(s) checked in __init__
                f"{self.endpoint}/latest/api/token", method="PUT",
                headers={"X-aws-ec2-metadata-token-ttl-seconds": str(TOKEN_SECONDS)})
            token = self._request(req)
            if not token:
                raise AwsError(f"instance metadata at {self.endpoint}: no IMDSv2 token")
            self._token, self._token_until = token.strip(), self.clock() + TOKEN_SECONDS - 60
        return self._token

    def _get(self, path: str) -> str | None:
        """GET `path` with the token; a 401 (token expired early) gets one fresh token."""
        for attempt in range(2):
            req = urllib.request.Request(  # noqa: S310 - http(s) checked in __init__
                f"{self.endpoint}/latest/{path}",
                headers={"X-aws-ec2-metadata-token": self._token_value()})
            try:
                return self._request(req)
            except _UnauthorizedError:
                self._token_until = float("-inf")
                if attempt:
                    raise
        return None
