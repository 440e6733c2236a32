"""The story of ``shared/origin/redis-cache-refresh.md``, told with real HTTP requests.

Each step prints one line starting with ``ok`` or ``FAIL``; details go on indented lines.
Used by ``scripts/demo.py`` and by the e2e tests, against a running :class:`stack.Stack`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TextIO

import jwt
import requests
from stack import SERVICE_NAME, Stack

DEMO_USERS = ("alice", "bob", "carol", "dave")


class StepFailed(Exception):
    """A step's expectation did not hold; the message says what was seen."""


class Story:
    """Runs the steps and remembers which failed."""

    def __init__(self, stack: Stack, out: TextIO = sys.stdout, local_cache_ttl: float = 60.0):
        self.stack = stack
        self.out = out
        self.local_cache_ttl = local_cache_ttl
        self.expected_ttl = stack.cache_ttl or 86400
        self.failures: list[str] = []
        self.passed: list[str] = []
        self.tokens: dict[str, str] = {}
        self.ids: dict[str, int] = {}
        self.session = requests.Session()

    def close(self) -> None:
        """Close the HTTP session (its keep-alive connections to billing_api)."""
        self.session.close()

    # -- output -----------------------------------------------------------------------------

    def ok(self, text: str) -> None:
        self.passed.append(text)
        print(f"ok   {text}", file=self.out, flush=True)

    def fail(self, text: str) -> None:
        self.failures.append(text)
        print(f"FAIL {text}", file=self.out, flush=True)

    def note(self, text: str) -> None:
        print(f"     {text}", file=self.out, flush=True)

    @contextmanager
    def step(self, title: str) -> Iterator[list[str]]:
        """One step: the body appends details to the yielded list; an exception is a FAIL."""
        details: list[str] = []
        try:
            yield details
        except StepFailed as exc:
            self.fail(f"{title}: {exc}")
            return
        except Exception as exc:  # a crash in a step is a failed step, never a traceback
            self.fail(f"{title}: {type(exc).__name__}: {exc}")
            return
        self.ok(title + (f" ({'; '.join(details)})" if details else ""))

    # -- HTTP -------------------------------------------------------------------------------

    def call(
        self, method: str, path: str, user: str | None = None, body: Any = None
    ) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.tokens[user]}"} if user else {}
        return self.session.request(
            method, self.stack.service_url + path, json=body, headers=headers, timeout=10
        )

    def expect(
        self, method: str, path: str, user: str | None, status: int, body: Any = None
    ) -> dict[str, Any]:
        response = self.call(method, path, user, body)
        try:
            data: dict[str, Any] = response.json()
        except ValueError as exc:
            raise StepFailed(
                f"{method} {path} answered {response.status_code} without JSON"
            ) from exc
        if response.status_code != status:
            raise StepFailed(
                f"{method} {path} as {user or 'anonymous'}: expected {status}, "
                f"got {response.status_code} {data}"
            )
        return data

    def burst(self, path: str, user: str, count: int = 16) -> list[tuple[int, dict[str, Any]]]:
        """``count`` concurrent requests on fresh connections, so every worker answers some."""

        def one(_: int) -> tuple[int, dict[str, Any]]:
            response = requests.get(
                self.stack.service_url + path,
                headers={"Authorization": f"Bearer {self.tokens[user]}"},
                timeout=10,
            )
            return response.status_code, response.json()

        with ThreadPoolExecutor(max_workers=8) as pool:
            return list(pool.map(one, range(count)))

    def until_status(
        self, path: str, user: str, status: int, since: float, within: float = 1.0
    ) -> tuple[int, float, requests.Response]:
        """Request ``path`` until it answers ``status``: ``(attempts, ms since, response)``.

        An invalidation travels through Redis pub/sub: normally the very next request already
        sees the change; on a slow Redis the message may be in flight for a few milliseconds.
        """
        attempts = 0
        while True:
            attempts += 1
            response = self.call("GET", path, user)
            elapsed_ms = (time.monotonic() - since) * 1000
            if response.status_code == status:
                return attempts, elapsed_ms, response
            if elapsed_ms > within * 1000:
                raise StepFailed(
                    f"GET {path} as {user} still {response.status_code} "
                    f"{elapsed_ms:.0f} ms after the change (expected {status})"
                )
            time.sleep(0.002)

    # -- the story --------------------------------------------------------------------------

    def run(self) -> bool:
        steps: list[Callable[[], None]] = [
            self.login,
            self.requests_allowed_and_denied,
            self.cache_entry_ttl,
            self.expiry_and_auto_refresh,
            self.revocation,
            self.manual_refresh,
            self.statistics,
        ]
        for step in steps:
            step()
        return not self.failures

    def login(self) -> None:
        with self.step("login: POST /api/token gave JWTs for " + ", ".join(DEMO_USERS)) as d:
            # Verified as billing_api does: with the IdP's published keys, no shared secret.
            keys = jwt.PyJWKClient(self.stack.jwks_url, timeout=5)
            for name in DEMO_USERS:
                token = self.stack.token(name)
                claims = jwt.decode(
                    token,
                    keys.get_signing_key_from_jwt(token).key,
                    algorithms=["RS256"],
                    audience="billing_api",
                    issuer="rbac-abac-idp",
                )
                self.tokens[name] = token
                self.ids[name] = int(claims["sub"])
            d.append("user ids " + ", ".join(f"{n}={i}" for n, i in self.ids.items()))
        with self.step("login with a wrong password is refused") as d:
            response = requests.post(
                f"{self.stack.idp_url}/api/token",
                json={"username": "alice", "password": "not-her-password"},
                timeout=5,
            )
            if response.status_code != 401:
                raise StepFailed(f"expected 401, got {response.status_code}")
            d.append("401")

    def requests_allowed_and_denied(self) -> None:
        with self.step("no token: GET /invoices is refused") as d:
            self.expect("GET", "/invoices", None, 401)
            d.append("401")
        cases = [
            ("alice (admin) GET /invoices", "GET", "/invoices", "alice", 200, None),
            ("carol (viewer) GET /invoices", "GET", "/invoices", "carol", 200, None),
            (
                "bob (accountant) POST /invoices",
                "POST",
                "/invoices",
                "bob",
                201,
                {"customer": "Wayne Enterprises", "amount": 250.0},
            ),
            (
                "carol (viewer) POST /invoices is denied",
                "POST",
                "/invoices",
                "carol",
                403,
                {"customer": "Stark Industries", "amount": 10},
            ),
            ("bob (finance) GET /invoices/1 (finance)", "GET", "/invoices/1", "bob", 200, None),
            ("carol (sales) GET /invoices/1 denied", "GET", "/invoices/1", "carol", 403, None),
            ("carol (sales) GET /invoices/3 (sales)", "GET", "/invoices/3", "carol", 200, None),
            ("alice (admin) GET /invoices/3", "GET", "/invoices/3", "alice", 200, None),
            ("carol (clearance 3) GET /reports", "GET", "/reports", "carol", 200, None),
            ("bob (clearance 2) GET /reports is denied", "GET", "/reports", "bob", 403, None),
            ("dave (no roles) GET /invoices is denied", "GET", "/invoices", "dave", 403, None),
        ]  # fmt: skip
        for title, method, path, user, status, body in cases:
            with self.step(title) as d:
                data = self.expect(method, path, user, status, body)
                d.append(str(status))
                if status == 403:
                    d.append(str(data.get("error") or data.get("reason")))

    def _entry_ttl(self, user: str) -> int:
        return int(self.stack.redis_client().ttl(self.stack.key(self.ids[user])))

    def _check_ttl(self, ttl: int) -> None:
        if not self.expected_ttl - 120 <= ttl <= self.expected_ttl:
            raise StepFailed(f"TTL is {ttl} s, expected about {self.expected_ttl} s")

    def cache_entry_ttl(self) -> None:
        with self.step("alice's cache entry is in Redis with the 24 h TTL") as d:
            key = self.stack.key(self.ids["alice"])
            if not self.stack.redis_client().exists(key):
                raise StepFailed(f"{key} is not in Redis")
            ttl = self._entry_ttl("alice")
            self._check_ttl(ttl)
            d.append(f"{key}, TTL {ttl} s")

    def expiry_and_auto_refresh(self) -> None:
        title = "the entry expires and the next request still succeeds through auto-refresh"
        with self.step(title) as d:
            redis_client = self.stack.redis_client()
            key = self.stack.key(self.ids["alice"])
            redis_client.expire(key, 1)  # what 24 h would do, in 1 s
            deadline = time.monotonic() + 5
            while redis_client.exists(key):
                if time.monotonic() > deadline:
                    raise StepFailed(f"{key} did not expire")
                time.sleep(0.05)
            # The in-process L1 copies lapse too (the demo runs billing_api with a short L1 TTL).
            time.sleep(self.local_cache_ttl + 0.2)
            data = self.expect("GET", "/invoices", "alice", 200)
            if not redis_client.exists(key):
                raise StepFailed("the request succeeded but the entry was not written back")
            ttl = self._entry_ttl("alice")
            self._check_ttl(ttl)
            d.append(f"200, {data['count']} invoices; entry back in Redis with TTL {ttl} s")

    def revocation(self) -> None:
        title = "bob's role is revoked at the IdP and he is denied at once, in every worker"
        with self.step(title) as d:
            before = self.burst("/whoami", "bob")
            refused = [(s, b) for s, b in before if s != 200]
            if refused:
                raise StepFailed(f"bob was not allowed before the change: {refused[0]}")
            pids = {body.get("pid") for _, body in before}
            response = self.stack.admin(
                "PUT", f"/api/users/{self.ids['bob']}/roles/{SERVICE_NAME}", {"roles": []}
            )
            changed = time.monotonic()
            if response.status_code != 200:
                raise StepFailed(f"PUT roles answered {response.status_code}: {response.text}")
            attempts, elapsed_ms, response = self.until_status("/invoices", "bob", 403, changed)
            after = self.burst("/invoices", "bob")
            allowed = [s for s, _ in after if s != 403]
            if allowed:
                raise StepFailed(f"{len(allowed)} of {len(after)} later requests not denied")
            first = "the very next request" if attempts == 1 else f"request {attempts}"
            d.append(f"{first} denied, {elapsed_ms:.0f} ms after the change")
            d.append(str(response.json().get("error")))
            d.append(f"then {len(after)} of {len(after)} denied; {len(pids)} workers")
        with self.step("bob's role is given back and he is allowed again at once") as d:
            response = self.stack.admin(
                "PUT",
                f"/api/users/{self.ids['bob']}/roles/{SERVICE_NAME}",
                {"roles": ["accountant"]},
            )
            changed = time.monotonic()
            if response.status_code != 200:
                raise StepFailed(f"PUT roles answered {response.status_code}: {response.text}")
            attempts, elapsed_ms, _ = self.until_status("/invoices", "bob", 200, changed)
            first = "the very next request" if attempts == 1 else f"request {attempts}"
            d.append(f"{first} allowed, {elapsed_ms:.0f} ms after the change")

    def manual_refresh(self) -> None:
        with self.step("manual POST /api/refresh-user-cache/ for carol") as d:
            response = requests.post(
                f"{self.stack.idp_url}/api/refresh-user-cache/",
                json={"user_id": self.ids["carol"], "service_name": SERVICE_NAME},
                headers={"Authorization": f"Bearer {self.stack.service_token}"},
                timeout=10,
            )
            body = response.json()
            if response.status_code != 200 or body.get("success") is not True:
                raise StepFailed(f"answered {response.status_code}: {body}")
            roles = body["attributes"]["roles"]
            if roles != ["viewer"]:
                raise StepFailed(f"roles {roles}, expected ['viewer']")
            ttl = self._entry_ttl("carol")
            self._check_ttl(ttl)
            d.append(f"roles {roles}, version {body.get('version')}, TTL {ttl} s in Redis")

    def statistics(self) -> None:
        with self.step("cache statistics of billing_api") as d:
            per_pid: dict[int, dict[str, Any]] = {}
            deadline = time.monotonic() + 5
            while len(per_pid) < self.stack.workers and time.monotonic() < deadline:
                for status, body in self.burst("/stats", "alice"):
                    if status != 200:
                        raise StepFailed(f"GET /stats answered {status}: {body}")
                    per_pid[body["pid"]] = body["stats"]
            names = ("l1_hits", "l2_hits", "l2_misses", "auto_refreshes", "invalidations")
            names += ("allowed", "denied")
            totals = {n: sum(int(s.get(n, 0)) for s in per_pid.values()) for n in names}
            if totals["auto_refreshes"] < 1 or totals["allowed"] < 1 or totals["denied"] < 1:
                raise StepFailed(f"counters do not show the story: {totals}")
            d.append(f"{len(per_pid)} workers: " + ", ".join(f"{k}={v}" for k, v in totals.items()))
