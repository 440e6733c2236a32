"""The identity provider's HTTP client: explicit timeouts, no redirects, a circuit breaker."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import requests

from .defaults import DEFAULT_IDP_TIMEOUT
from .errors import DecodeError, IdentityProviderError
from .model import UserAttributes

log = logging.getLogger(__name__)

REFRESH_PATH = "/api/refresh-user-cache/"
HEALTH_PATH = "/healthz"
#: Answers that mean "the IdP has no such user": a 404, and the 400 for an id that cannot be one
#: of its users (a string id from a custom identity loader). Both are remembered as unknown
#: (a tuple, not a set: `code` comes from the network and may be unhashable).
_UNKNOWN_USER = ((404, "user_not_found"), (400, "invalid_user_id"))


class CircuitBreaker:
    """Opens after ``threshold`` consecutive failures; lets one trial call through after
    ``reset_after`` seconds (half-open) and closes again when it succeeds.

    While open, a dead identity provider costs a request nothing instead of a timeout.
    """

    def __init__(
        self,
        threshold: int = 3,
        reset_after: float = 2.0,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = threshold
        self.reset_after = reset_after
        self._timer = timer
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_running = False

    @property
    def state(self) -> str:
        with self._lock:
            if self._opened_at is None:
                return "closed"
            if self._timer() - self._opened_at >= self.reset_after:
                return "half-open"
            return "open"

    def allow(self) -> bool:
        """May a call go out now?"""
        with self._lock:
            if self._opened_at is None:
                return True
            if self._timer() - self._opened_at < self.reset_after or self._trial_running:
                return False
            self._trial_running = True
            return True

    def record_success(self) -> None:
        with self._lock:
            self._failures = 0
            self._opened_at = None
            self._trial_running = False

    def record_failure(self) -> None:
        with self._lock:
            self._failures += 1
            self._trial_running = False
            if self._failures >= self.threshold:
                self._opened_at = self._timer()


class IdentityProviderClient:
    """Calls ``POST /api/refresh-user-cache/`` and ``GET /healthz`` on the identity provider.

    :param base_url: the IdP's base URL (``IDENTITY_PROVIDER_URL``).
    :param service_token: sent as ``Authorization: Bearer``; never logged.
    :param timeout: ``(connect, read)`` seconds for every call.
    """

    def __init__(
        self,
        base_url: str,
        *,
        service_token: str | None = None,
        timeout: tuple[float, float] = DEFAULT_IDP_TIMEOUT,
        breaker: CircuitBreaker | None = None,
        session: requests.Session | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.breaker = breaker if breaker is not None else CircuitBreaker()
        self._session = session if session is not None else requests.Session()
        self._headers = {"Accept": "application/json"}
        if service_token:
            self._headers["Authorization"] = f"Bearer {service_token}"

    def refresh(self, user_id: int | str, service_name: str) -> UserAttributes | None:
        """Ask the IdP to rebuild and cache one entry; ``None`` when the user is unknown there
        (no such user, inactive, no role in the service, or an id it cannot hold). Raises
        :class:`IdentityProviderError` for every other failure."""
        if not self.breaker.allow():
            raise IdentityProviderError(
                "identity provider circuit breaker is open", reason="breaker_open"
            )
        try:
            response = self._session.post(
                self.base_url + REFRESH_PATH,
                json={"user_id": user_id, "service_name": service_name},
                headers=self._headers,
                timeout=self.timeout,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            self.breaker.record_failure()
            raise IdentityProviderError(
                f"identity provider unreachable at {self.base_url}: {type(exc).__name__}",
                reason="unreachable",
            ) from exc
        if response.status_code >= 500:
            self.breaker.record_failure()
            raise IdentityProviderError(
                f"identity provider answered {response.status_code}",
                reason="server_error",
                status=response.status_code,
            )
        self.breaker.record_success()
        return self._parse(response, user_id, service_name)

    def _parse(
        self, response: requests.Response, user_id: int | str, service_name: str
    ) -> UserAttributes | None:
        status = response.status_code
        if 300 <= status < 400:
            raise IdentityProviderError(
                f"identity provider answered a redirect ({status}); "
                "IDENTITY_PROVIDER_URL must be the IdP's own base URL",
                reason="redirect",
                status=status,
            )
        try:
            body: Any = response.json()
        except ValueError as exc:
            raise IdentityProviderError(
                f"identity provider answered {status} without JSON",
                reason="bad_answer",
                status=status,
            ) from exc
        if not isinstance(body, dict):
            raise IdentityProviderError(
                f"identity provider answered {status} with a non-object",
                reason="bad_answer",
                status=status,
            )
        error = str(body.get("error", ""))
        if (status, body.get("code")) in _UNKNOWN_USER:
            return None
        if status != 200 or body.get("success") is not True:
            code = body.get("code")
            raise IdentityProviderError(
                f"identity provider refused the refresh ({status}): {error or 'no reason given'}",
                reason="refused",
                status=status,
                code=code if isinstance(code, str) else None,
            )
        try:
            attrs = UserAttributes.from_dict(body.get("attributes"))
        except DecodeError as exc:
            raise IdentityProviderError(
                f"identity provider sent bad attributes: {exc}", reason="bad_answer", status=status
            ) from exc
        if attrs.user_id != user_id or attrs.service_name != service_name:
            raise IdentityProviderError(
                "identity provider answered for another user or service",
                reason="bad_answer",
                status=status,
            )
        return attrs

    def health(self, timeout: tuple[float, float] | None = None) -> dict[str, Any]:
        """``{"ok": bool, "url": ..., "status"|"error": ...}``; never raises. A live call, for
        diagnostics (``rbac-abac check``) and the background probe, never a public endpoint.

        :param timeout: ``(connect, read)`` seconds; this client's timeout by default.
        """
        started = time.perf_counter()
        try:
            response = self._session.get(
                self.base_url + HEALTH_PATH,
                timeout=timeout or self.timeout,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            return {"ok": False, "url": self.base_url, "error": type(exc).__name__}
        return {
            "ok": response.status_code == 200,
            "url": self.base_url,
            "status": response.status_code,
            "latency_ms": round((time.perf_counter() - started) * 1000, 3),
            "breaker": self.breaker.state,
        }

    def close(self) -> None:
        self._session.close()
