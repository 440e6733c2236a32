"""The admin console in a real headless Chromium, against the IdP and billing_api as processes.

A person signs in, finds carol, takes her only role away in billing_api, and every billing_api
worker denies her within a second; a form posted without its CSRF token is refused; a signed-out
browser is sent to the sign-in page and sees no data. A screenshot of each page is saved (to
``$CONSOLE_SCREENSHOT_DIR`` when set, e.g. ``docs/console``, else the test's tmp_path).
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
import requests

from tests.conftest import service_missing
from tests.e2e.conftest import E2E

pytestmark = pytest.mark.e2e

StackFactory = Callable[..., E2E]
T = TypeVar("T")
ADMIN, PASSWORD = "ops", "console-pass-for-e2e"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1000",
)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    """Debian's chromium through its chromedriver, with a fresh profile; quit after."""
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        service_missing("Debian's chromium and chromium-driver (make test installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(chromium)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(driver_path)))
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()


# Chromium (134 and later) sometimes answers a command on an element of a page that has just
# loaded with this inspector error instead of acting or raising "stale element"
# (SeleniumHQ/selenium#15401, teamcapybara/capybara#2800). Each step below finds its element
# again and retries on it, so a browser quirk does not read as a console failure.
CDP_NODE_ERRORS = (
    "does not belong to the document",
    "no node with given id",
    "could not find node",
)
RETRIES = 8


class Pages:
    """Drives the console and keeps a screenshot of each page it names."""

    def __init__(self, driver: object, base: str, shots: Path) -> None:
        self.driver = driver
        self.base = base
        self.shots = shots
        shots.mkdir(parents=True, exist_ok=True)

    def _retry(self, step: Callable[[], T]) -> T:
        from selenium.common.exceptions import StaleElementReferenceException, WebDriverException

        for attempt in range(RETRIES):
            try:
                return step()
            except StaleElementReferenceException:
                pass
            except WebDriverException as exc:
                if not any(text in str(exc.msg).lower() for text in CDP_NODE_ERRORS):
                    raise
            time.sleep(0.05 * (attempt + 1))
        return step()

    def _js(self, script: str, *args: object) -> object:
        return self.driver.execute_script(script, *args)  # type: ignore[attr-defined]

    def _loaded(self) -> None:
        from selenium.webdriver.support.ui import WebDriverWait

        WebDriverWait(self.driver, 15).until(
            lambda _: self._js("return document.readyState") == "complete"
        )

    def open(self, path: str) -> None:
        self.driver.get(self.base + path)  # type: ignore[attr-defined]
        self._loaded()

    def el(self, css: str) -> object:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, css)  # type: ignore[attr-defined]

    def text(self, css: str) -> str:
        return self._retry(lambda: str(self.el(css).text))  # type: ignore[attr-defined]

    def selected(self, css: str) -> bool:
        return self._retry(lambda: bool(self.el(css).is_selected()))  # type: ignore[attr-defined]

    def type(self, css: str, text: str) -> None:
        def step() -> None:
            field = self.el(css)
            field.clear()  # type: ignore[attr-defined]
            field.send_keys(text)  # type: ignore[attr-defined]

        self._retry(step)

    def check(self, css: str, on: bool) -> None:
        """Tick or untick a checkbox; a retried step cannot toggle it twice."""

        def step() -> None:
            if self.el(css).is_selected() != on:  # type: ignore[attr-defined]
                self.el(css).click()  # type: ignore[attr-defined]
            assert self.el(css).is_selected() == on  # type: ignore[attr-defined]

        self._retry(step)

    def submit(self, css: str) -> None:
        """Click ``css`` and wait until the next page has replaced this one and loaded.

        The page is marked with a token first; a new document does not carry it, so the wait
        cannot mistake this page for the next, and a retried click never submits twice.
        """
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.support.ui import WebDriverWait

        mark = uuid.uuid4().hex
        self._js("window.__e2ePage = arguments[0];", mark)

        def here() -> bool:
            return self._js("return window.__e2ePage || null;") == mark

        def click() -> None:
            if here():
                self.el(css).click()  # type: ignore[attr-defined]

        self._retry(click)
        WebDriverWait(self.driver, 15, ignored_exceptions=(WebDriverException,)).until(
            lambda _: not here() and self._js("return document.readyState") == "complete"
        )

    def shot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        assert self.driver.save_screenshot(str(path))  # type: ignore[attr-defined]
        assert path.read_bytes()[:8] == PNG_MAGIC
        return path

    @property
    def url(self) -> str:
        return str(self.driver.current_url)  # type: ignore[attr-defined]

    @property
    def source(self) -> str:
        return str(self.driver.page_source)  # type: ignore[attr-defined]


def test_console_revokes_a_role_and_billing_api_denies_within_a_second(
    make_stack: StackFactory, browser: object, tmp_path: Path
) -> None:
    stack = make_stack(
        idp_config={
            "SECRET_KEY": "console-e2e-secret-" + "k" * 16,
            "IDP_CONSOLE_SECURE_COOKIES": "false",
        }
    )
    stack.flask("idp_app", "create-admin", ADMIN, "--password", PASSWORD)
    carol = stack.token("carol")
    workers = stack.until_every_worker("/invoices", carol, lambda status, body: status == 200)
    assert stack.wait_subscribed() == workers
    pages = Pages(browser, stack.idp_url, Path(os.environ.get("CONSOLE_SCREENSHOT_DIR", tmp_path)))

    # Signed out: every page sends the browser to the sign-in page.
    pages.open("/admin/users/?q=carol")
    assert "/admin/sign-in" in pages.url
    assert "carol" not in pages.text("main")
    pages.shot("sign-in")

    pages.type("#username", ADMIN)
    pages.type("#password", PASSWORD)
    pages.submit("#sign-in")
    assert pages.url.endswith("/admin/users/?q=carol")  # back where it was sent from
    pages.open("/admin/")
    assert pages.text("#redis") == "ok"
    assert pages.text("#database") == "ok"
    pages.shot("dashboard")

    # Find carol.
    pages.open("/admin/users/")
    pages.type("#q", "car")
    pages.submit("#search")
    rows = pages.text("#users tbody")
    assert "carol" in rows and "alice" not in rows
    pages.shot("users")
    pages.submit("#users tbody a")
    assert pages.selected("#role-billing_api-viewer")
    pages.shot("user")

    # Revoke her only role in billing_api.
    pages.check("#role-billing_api-viewer", on=False)
    pages.submit("#save-roles-billing_api")
    changed = time.monotonic()
    denied: dict[int, float] = {}
    while len(denied) < len(workers) and time.monotonic() - changed < 1.0:
        for at, pid, status, _ in stack.burst("/invoices", carol, 8):
            if status == 403:
                denied.setdefault(pid, at - changed)
    assert set(denied) == workers, f"not denied within 1 s in {workers - set(denied)}"
    after = stack.burst("/invoices", carol, 16)
    assert {status for _, _, status, _ in after} == {403}
    assert "roles in billing_api saved" in pages.text("main")
    assert not pages.selected("#role-billing_api-viewer")
    pages.shot("user-role-revoked")

    # Services: a new token, shown once.
    pages.open("/admin/services/")
    pages.shot("services")
    pages.open("/admin/services/billing_api")
    pages.submit("#issue-token")
    token = pages.text("#new-token")
    assert token.startswith("svc_")
    pages.shot("service-new-token")
    pages.open("/admin/services/billing_api")
    assert token not in pages.source

    # A form without its CSRF token is refused: in the browser, and with the browser's cookie.
    user_path = f"/admin/users/{stack.user_id(carol)}"
    pages.open(user_path)
    browser.execute_script(  # type: ignore[attr-defined]
        "document.querySelectorAll('input[name=csrf_token]').forEach(e => e.remove());"
    )
    pages.submit("#deactivate")
    assert "Request refused" in pages.text("h1")
    assert "CSRF token is missing" in pages.text("main")
    pages.shot("csrf-refused")
    session = requests.Session()
    for cookie in browser.get_cookies():  # type: ignore[attr-defined]
        session.cookies.set(cookie["name"], cookie["value"])
    refused = session.post(
        stack.idp_url + user_path + "/deactivate", timeout=5, allow_redirects=False
    )
    assert refused.status_code == 400
    pages.open(user_path)
    assert pages.text("#status") == "active"

    # Signed out: no data, whatever the page.
    pages.submit("#sign-out")
    assert "/admin/sign-in" in pages.url
    pages.open(user_path)
    assert "/admin/sign-in" in pages.url
    assert "carol" not in pages.text("main")
    signed_out = session.get(stack.idp_url + user_path, timeout=5, allow_redirects=False)
    assert signed_out.status_code == 302  # the copied cookie of the signed-out session too
