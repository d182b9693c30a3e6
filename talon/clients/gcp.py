"""The Google Cloud client: credentials, the Cloud Functions API, function calls, GCS uploads.

Layer L1. Credentials come from the `gcp.credentials_path` file (read as a path, any type
google-auth loads: service account, impersonated, external account…), else from the
Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS, gcloud, the metadata
server). They are loaded on first use under a lock, then shared by all worker threads;
a failed load is retried by the next call. Every request carries a timeout, token
refreshes included.

Endpoints: the Cloud Functions API is `CLOUDSDK_API_ENDPOINT_OVERRIDES_CLOUDFUNCTIONS`
(the gcloud SDK's own override) or https://cloudfunctions.googleapis.com/; the storage
client honours STORAGE_EMULATOR_HOST, and against an emulator with no credentials file it
uses anonymous credentials. Failures raise `GcpError` with a one-line reason.
"""

from __future__ import annotations

import functools
import json
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from talon.errors import TalonError

API_ENV = "CLOUDSDK_API_ENDPOINT_OVERRIDES_CLOUDFUNCTIONS"
DEFAULT_API = "https://cloudfunctions.googleapis.com/"
EMULATOR_ENV = "STORAGE_EMULATOR_HOST"
PROJECT_ENVS = ("GOOGLE_CLOUD_PROJECT", "CLOUDSDK_CORE_PROJECT")
SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
RESPONSE_MAX = 1 << 20
"""Longest function answer kept (bytes); the rest is cut off."""


class GcpError(TalonError):
    """A Google Cloud call failed: credentials, the API, the function or the storage."""


def _call_errors() -> tuple[type[BaseException], ...]:
    """The exceptions a Google call raises for remote or credential failures."""
    import requests
    from google.api_core import exceptions as api_exceptions
    from google.auth import exceptions as auth_exceptions

    return (requests.RequestException, auth_exceptions.GoogleAuthError,
            api_exceptions.GoogleAPIError, ValueError)


def _reason(exc: BaseException) -> str:
    """A short, single-line description of a client exception."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 500 else text[:497] + "..."


def _answer_text(body: bytes) -> str:
    """The text of an error answer: the API's `error.message` when it has one."""
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])
    if isinstance(error, str) and isinstance(data, dict):
        return str(data.get("error_description") or error)
    return _reason(ValueError(body[:500].decode("utf-8", "replace")))


@dataclass(frozen=True, slots=True)
class Answer:
    """What a function answered: HTTP status and body (cut to RESPONSE_MAX bytes)."""

    status: int
    body: bytes
    truncated: bool = False


@dataclass
class Gcp:
    """Google Cloud access shared by the gcp:* plug-ins; build it with `connect`."""

    credentials_path: str
    timeout: float
    api_base: str
    emulator: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _token_lock: threading.Lock = field(default_factory=threading.Lock)
    _credentials: tuple[Any, str, dict[str, Any] | None] | None = None
    _sessions: dict[str, Any] = field(default_factory=dict)
    _id_credentials: dict[str, Any] = field(default_factory=dict)

    # -- credentials ----------------------------------------------------------------

    def _load(self) -> tuple[Any, str, dict[str, Any] | None]:
        """(credentials, project id, the parsed credentials file or None for ADC)."""
        import google.auth

        if not self.credentials_path:
            credentials, project = google.auth.default(scopes=SCOPES)
            return credentials, project or _env_project(), None
        path = Path(self.credentials_path).expanduser()
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not valid JSON"
            raise GcpError(f"cannot read the GCP credentials file '{path}': {reason}") from None
        if not isinstance(info, dict):
            raise GcpError(f"the GCP credentials file '{path}' is not a JSON object")
        credentials = _from_info(info, path)
        project = info.get("project_id") or info.get("quota_project_id") or _env_project()
        return credentials, project, info

    def credentials(self) -> tuple[Any, str, dict[str, Any] | None]:
        """The loaded credentials, project id and file content (loaded once)."""
        with self._lock:
            if self._credentials is None:
                try:
                    self._credentials = self._load()
                except _call_errors() as exc:
                    raise GcpError(f"no usable GCP credentials: {_reason(exc)}") from exc
            return self._credentials

    def project(self) -> str:
        """The project id of the credentials (or GOOGLE_CLOUD_PROJECT)."""
        project = self.credentials()[1]
        if not project:
            raise GcpError("no GCP project id: the credentials carry none and "
                           "GOOGLE_CLOUD_PROJECT is not set")
        return str(project)

    def _session(self, kind: str) -> Any:
        """A shared requests session: `api` (authorised with the credentials) or `plain`."""
        if kind == "api":
            credentials = self.credentials()[0]
        with self._lock:
            if kind not in self._sessions:
                import requests
                from google.auth.transport.requests import AuthorizedSession

                plain = requests.Session()
                self._sessions[kind] = plain if kind == "plain" else AuthorizedSession(  # type: ignore[no-untyped-call]
                    credentials, refresh_timeout=self.timeout)
            return self._sessions[kind]

    def id_token(self, audience: str, timeout: float) -> str:
        """A Google-signed ID token for `audience` (cached until it nears expiry)."""
        info = self.credentials()[2]
        with self._token_lock:
            token_credentials = self._id_credentials.get(audience)
            if token_credentials is None:
                token_credentials = _id_token_credentials(info, audience, timeout)
                self._id_credentials[audience] = token_credentials
            if not token_credentials.valid:
                from google.auth.transport.requests import Request

                request = Request(self._session("plain"))
                try:
                    token_credentials.refresh(functools.partial(request, timeout=timeout))
                except _call_errors() as exc:
                    raise GcpError(f"cannot get an ID token for '{audience}': "
                                   f"{_reason(exc)}") from exc
            return str(token_credentials.token)

    # -- Cloud Functions ------------------------------------------------------------

    def function(self, location: str, name: str, timeout: float) -> dict[str, Any]:
        """The Cloud Functions v2 `Function` resource (GET projects/P/locations/L/functions/N)."""
        resource = self.function_name(location, name)
        url = self.api_base.rstrip("/") + "/v2/" + quote(resource, safe="/")
        try:
            response = self._session("api").get(url, timeout=timeout)
        except _call_errors() as exc:
            raise GcpError(f"cannot get the function '{resource}': {_reason(exc)}") from exc
        if response.status_code != 200:
            raise GcpError(f"cannot get the function '{resource}': {response.status_code} "
                           f"{_answer_text(response.content)}")
        try:
            found = response.json()
        except ValueError:
            found = None
        if not isinstance(found, dict):
            raise GcpError(f"cannot get the function '{resource}': the answer is not JSON")
        return found

    def function_name(self, location: str, name: str) -> str:
        return f"projects/{self.project()}/locations/{location}/functions/{name}"

    def call(self, url: str, body: bytes, timeout: float) -> Answer:
        """POST `body` (JSON) to the function at `url` with an ID token for it."""
        token = self.id_token(url, timeout)
        deadline = time.monotonic() + timeout
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        import requests

        try:
            with self._session("plain").post(url, data=body, headers=headers, stream=True,
                                             timeout=timeout, allow_redirects=False) as resp:
                data, truncated = _read(resp, deadline)
                return Answer(resp.status_code, data, truncated)
        except (requests.Timeout, TimeoutError) as exc:
            raise GcpError(f"the function at '{url}' did not answer within "
                           f"{timeout:g}s") from exc
        except _call_errors() as exc:
            raise GcpError(f"cannot call the function at '{url}': {_reason(exc)}") from exc

    # -- Cloud Storage --------------------------------------------------------------

    def _storage(self) -> Any:
        if self.emulator and not self.credentials_path:
            credentials, project = None, _env_project() or None  # the emulator: anonymous
        else:
            credentials, project, _info = self.credentials()
        with self._lock:
            if "storage" not in self._sessions:
                from google.cloud import storage

                self._sessions["storage"] = storage.Client(
                    project=project or None, credentials=credentials)
            return self._sessions["storage"]

    def upload(self, bucket: str, key: str, data: bytes, content_type: str,
               timeout: float) -> None:
        """Create (or replace) the object `key` of `bucket` with exactly `data`.

        Each request may take `timeout` seconds; transient failures (connection errors,
        429, 5xx) are retried for at most the client's own `timeout`.
        """
        try:
            storage = self._storage()
            from google.cloud.storage.retry import DEFAULT_RETRY

            retry = DEFAULT_RETRY.with_timeout(min(timeout, self.timeout))
            blob = storage.bucket(bucket).blob(key)
            blob.upload_from_string(data, content_type=content_type, timeout=timeout,
                                    retry=retry)
        except _call_errors() as exc:
            raise GcpError(_reason(exc)) from exc


def _env_project() -> str:
    return next((os.environ[n] for n in PROJECT_ENVS if os.environ.get(n)), "")


def _from_info(info: dict[str, Any], path: Path) -> Any:
    """Credentials of the types a credentials file may hold for Talon (loaded by type,
    never by a generic loader, so a file cannot smuggle in another kind)."""
    from google.oauth2 import credentials as user
    from google.oauth2 import service_account

    kind = info.get("type")
    if kind == "service_account":
        return service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
            info, scopes=SCOPES)
    if kind == "impersonated_service_account":
        from google.auth import impersonated_credentials

        return impersonated_credentials.Credentials.from_impersonated_service_account_info(  # type: ignore[no-untyped-call]
            info, scopes=SCOPES)
    if kind == "authorized_user":
        return user.Credentials.from_authorized_user_info(info, scopes=SCOPES)  # type: ignore[no-untyped-call]
    raise GcpError(f"the GCP credentials file '{path}' is of type '{kind}': use a service "
                   f"account, or GOOGLE_APPLICATION_CREDENTIALS for other types")


def _id_token_credentials(info: dict[str, Any] | None, audience: str, timeout: float) -> Any:
    """Credentials minting ID tokens for `audience`, from the file or the ADC."""
    from google.oauth2 import id_token, service_account

    kind = (info or {}).get("type")
    if info is None:
        from google.auth.transport.requests import Request

        request = functools.partial(Request(), timeout=timeout)
        try:
            return id_token.fetch_id_token_credentials(audience, request=request)  # type: ignore[no-untyped-call]
        except _call_errors() as exc:
            raise GcpError(f"cannot get an ID token for '{audience}': {_reason(exc)}") from exc
    if kind == "service_account":
        return service_account.IDTokenCredentials.from_service_account_info(  # type: ignore[no-untyped-call]
            info, target_audience=audience)
    if kind == "impersonated_service_account":
        from google.auth import impersonated_credentials

        target = impersonated_credentials.Credentials.from_impersonated_service_account_info(  # type: ignore[no-untyped-call]
            info)
        return impersonated_credentials.IDTokenCredentials(  # type: ignore[no-untyped-call]
            target_credentials=target, target_audience=audience, include_email=True)
    raise GcpError(f"credentials of type '{kind}' cannot get ID tokens to call a function: "
                   f"use a service account (or an impersonated one)")


def _read(response: Any, deadline: float) -> tuple[bytes, bool]:
    """The response body, up to RESPONSE_MAX bytes, read before `deadline`."""
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_content(65536):
        if time.monotonic() > deadline:
            raise TimeoutError
        chunks.append(chunk)
        size += len(chunk)
        if size > RESPONSE_MAX:
            return b"".join(chunks)[:RESPONSE_MAX], True
    return b"".join(chunks), False


def _api_base(environ: Mapping[str, str]) -> str:
    base = environ.get(API_ENV, "").strip() or DEFAULT_API
    if urlsplit(base).scheme not in ("http", "https") or not urlsplit(base).netloc:
        raise GcpError(f"{API_ENV} must be an http(s) URL, got '{base}'")
    return base


def connect(credentials_path: str, *, timeout: float,
            environ: Mapping[str, str] | None = None) -> Gcp:
    """A `Gcp` for these settings; nothing is loaded or contacted until first use."""
    env = os.environ if environ is None else environ
    return Gcp(credentials_path=credentials_path, timeout=timeout,
               api_base=_api_base(env), emulator=env.get(EMULATOR_ENV, ""))
