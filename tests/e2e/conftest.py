"""Browser-test fixtures: Debian's headless Chromium driven by Playwright against pytest-django's live server."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import PASSWORD

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SHOTS = Path("/tmp/hemaloop-shots")


def pytest_collection_modifyitems(items):
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(pytest.mark.browser)


@pytest.fixture
def no_script_errors(page):
    """Fails a test whose page threw a JavaScript error (refused API calls are expected, not errors)."""
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on(
        "console",
        lambda message: (
            errors.append(message.text)
            if message.type == "error" and not message.text.startswith("Failed to load resource")
            else None
        ),
    )
    yield
    assert errors == []


@pytest.fixture(autouse=True)
def _restore_seed_data(django_db_serialized_rollback):
    """live_server empties every table after a test; restore the migrations' seed data (the taxonomy)."""


@pytest.fixture(scope="package")
def browser(django_db_setup):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium); browser tests need it")
    from django.db import connections
    from playwright.sync_api import sync_playwright

    # Between its calls Playwright's sync API marks its event loop as running in this thread, and from then
    # on Django hands this thread new (async-context) connection objects: they lack the seed-data snapshot
    # taken when the test database was created, so serialized_rollback would restore nothing. Carry it over.
    snapshots = {alias: getattr(connections[alias], "_test_serialized_contents", None) for alias in connections}

    # Playwright's sync API runs an event loop in this thread, and Django refuses synchronous ORM calls
    # (from the tests and fixtures) while one runs. Set only for this package, not at import: the
    # variable would leak into the subprocesses other tests start (`check --deploy` flags it).
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
            for alias, snapshot in snapshots.items():
                if snapshot is not None:
                    connections[alias]._test_serialized_contents = snapshot
            yield browser
            browser.close()
    finally:
        del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    context.set_default_timeout(15_000)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def screenshot(page):
    """screenshot("name") -> saves the full page to /tmp/hemaloop-shots/name.png."""

    def take(name: str) -> Path:
        SHOTS.mkdir(parents=True, exist_ok=True)
        path = SHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take


@pytest.fixture
def log_in(page, live_server):
    """log_in(user) -> fills the real login form and waits for the home page."""

    def do(user) -> None:
        page.goto(f"{live_server.url}/accounts/login/")
        page.get_by_label("User name").fill(user.username)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(f"{live_server.url}/")

    return do
