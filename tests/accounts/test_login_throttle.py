"""Failed logins on the login page and the token endpoint lock the user name and the client address for a while, with
a message that says when to retry; a lock tells nothing about which names exist."""

from __future__ import annotations

import re

import pytest
from django.test import Client
from rest_framework.test import APIClient

from core.roles import Role

PASSWORD = "right-horse-battery-staple"  # noqa: S105 - a test-only password
LOCKED_10_MINUTES = "Too many failed login attempts. Try again in 10 minutes."
WRONG = "Wrong user name or password. Please try again."

pytestmark = pytest.mark.usefixtures("login_limits")


@pytest.fixture
def user(make_user):
    return make_user(Role.ANNOTATOR, password=PASSWORD)


def page_login(username: str, password: str, *, address: str = "127.0.0.1", client: Client | None = None):
    client = client or Client(REMOTE_ADDR=address)
    return client.post("/accounts/login/", {"username": username, "password": password})


def api_login(username: str, password: str, *, address: str = "127.0.0.1", **headers):
    client = APIClient(REMOTE_ADDR=address)
    return client.post("/api/accounts/token/", {"username": username, "password": password}, format="json", **headers)


def logged_in(response) -> bool:
    return response.status_code == 302 and "_auth_user_id" in response.client.session


def page_message(response) -> str:
    match = re.search(r'<p class="error" role="alert">(.*?)</p>', response.content.decode())
    return match.group(1) if match else ""


def test_the_login_page_locks_a_user_name_after_too_many_failures_and_says_when_to_retry(user, clock):
    assert page_message(page_login(user.username, "wrong-1")) == WRONG
    assert page_message(page_login(user.username, "wrong-2")) == WRONG
    assert page_message(page_login(user.username, "wrong-3")) == LOCKED_10_MINUTES

    response = page_login(user.username, PASSWORD)
    assert not logged_in(response)
    assert page_message(response) == LOCKED_10_MINUTES

    clock.advance(9 * 60 + 30)
    response = page_login(user.username, PASSWORD)
    assert page_message(response) == "Too many failed login attempts. Try again in 30 seconds."


def test_the_lock_lifts_after_the_window(user, clock):
    for attempt in range(3):
        page_login(user.username, f"wrong-{attempt}")
    assert not logged_in(page_login(user.username, PASSWORD))

    clock.advance(600)
    assert logged_in(page_login(user.username, PASSWORD))


def test_the_token_endpoint_answers_429_with_retry_after_and_a_detail(user, clock):
    assert api_login(user.username, "wrong-1").status_code == 400
    assert api_login(user.username, "wrong-2").status_code == 400
    response = api_login(user.username, "wrong-3")
    assert response.status_code == 429

    response = api_login(user.username, PASSWORD)
    assert response.status_code == 429
    assert response["Retry-After"] == "600"
    assert response.json() == {"detail": LOCKED_10_MINUTES, "code": "login_locked"}
    assert "token" not in response.json()

    clock.advance(600)
    assert api_login(user.username, PASSWORD).json()["token"]


def test_the_login_page_and_the_token_endpoint_count_failures_together(user):
    page_login(user.username, "wrong-1")
    api_login(user.username, "wrong-2")
    page_login(user.username, "wrong-3")

    assert api_login(user.username, PASSWORD).status_code == 429
    assert page_message(page_login(user.username, PASSWORD)) == LOCKED_10_MINUTES


def test_a_successful_login_clears_the_count_of_the_user_name(user):
    for _ in range(2):
        page_login(user.username, "wrong-1")
        page_login(user.username, "wrong-2")
        assert logged_in(page_login(user.username, PASSWORD))


def test_a_locked_user_name_is_refused_from_every_address_and_other_names_are_not(user, make_user):
    colleague = make_user(Role.ANNOTATOR, password=PASSWORD)
    for n in range(3):
        page_login(user.username, "wrong", address=f"10.0.0.{n + 1}")

    assert page_message(page_login(user.username, PASSWORD, address="10.0.0.9")) == LOCKED_10_MINUTES
    assert api_login(user.username, PASSWORD, address="10.0.0.9").status_code == 429
    assert logged_in(page_login(colleague.username, PASSWORD, address="10.0.0.1"))


def test_the_user_name_lock_ignores_case(user):
    for name in (user.username.upper(), user.username.title(), f" {user.username}"):
        page_login(name, "wrong")
    assert page_message(page_login(user.username, PASSWORD)) == LOCKED_10_MINUTES


def test_a_locked_address_is_refused_for_every_name_and_other_addresses_are_not(user):
    for n in range(5):
        api_login(f"guess{n}", "wrong", address="10.0.0.1")

    assert page_message(page_login(user.username, PASSWORD, address="10.0.0.1")) == LOCKED_10_MINUTES
    assert api_login(user.username, PASSWORD, address="10.0.0.1").status_code == 429
    assert logged_in(page_login(user.username, PASSWORD, address="10.0.0.2"))


def test_an_ipv6_host_cannot_dodge_the_address_limit_by_changing_addresses_inside_its_64(user):
    for n in range(5):
        page_login(f"guess{n}", "wrong", address=f"2001:db8:1:2::{n + 1}")

    assert page_message(page_login(user.username, PASSWORD, address="2001:db8:1:2::ffff")) == LOCKED_10_MINUTES
    assert logged_in(page_login(user.username, PASSWORD, address="2001:db8:1:3::1"))


def test_x_forwarded_for_is_ignored_unless_proxies_are_trusted(user):
    for n in range(5):
        client = Client(REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR=f"192.0.2.{n}")
        page_login(f"guess{n}", "wrong", client=client)

    client = Client(REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="192.0.2.99")
    response = page_login(user.username, PASSWORD, client=client)
    assert page_message(response) == LOCKED_10_MINUTES


def test_behind_a_trusted_proxy_the_address_it_appended_counts_and_what_the_client_wrote_does_not(user, settings):
    settings.HEMALOOP_TRUSTED_PROXIES = 1
    proxy = "10.0.0.254"
    for n in range(5):
        # The attacker at 198.51.100.7 writes a fresh address into the header; the proxy appends the real one.
        client = Client(REMOTE_ADDR=proxy, HTTP_X_FORWARDED_FOR=f"192.0.2.{n}, 198.51.100.7")
        page_login(f"guess{n}", "wrong", client=client)

    attacker = Client(REMOTE_ADDR=proxy, HTTP_X_FORWARDED_FOR="198.51.100.7")
    colleague = Client(REMOTE_ADDR=proxy, HTTP_X_FORWARDED_FOR="203.0.113.5")
    assert page_message(page_login(user.username, PASSWORD, client=attacker)) == LOCKED_10_MINUTES
    assert logged_in(page_login(user.username, PASSWORD, client=colleague))


def _page_answer(response, username: str) -> tuple:
    html = re.sub(r'name="csrfmiddlewaretoken" value="[^"]+"', "", response.content.decode())
    return response.status_code, html.replace(username, "NAME")


def _api_answer(response) -> tuple:
    return response.status_code, response.json(), response.get("Retry-After"), response.get("WWW-Authenticate")


def test_known_and_unknown_user_names_get_the_same_answers_before_and_during_a_lock(user, clock):
    unknown = "x" * len(user.username)
    answers = {}
    for name, address in ((user.username, "10.0.1.1"), (unknown, "10.0.2.1")):
        attempts = [_page_answer(page_login(name, f"wrong-{n}", address=address), name) for n in range(2)]
        attempts.append(_api_answer(api_login(name, "wrong-3", address=address)))
        attempts.append(_page_answer(page_login(name, PASSWORD, address=address), name))
        attempts.append(_api_answer(api_login(name, PASSWORD, address=address)))
        answers[name] = attempts

    assert answers[user.username] == answers[unknown]
    assert answers[unknown][-1] == (429, {"detail": LOCKED_10_MINUTES, "code": "login_locked"}, "600", None)


def test_the_log_names_a_locked_user_but_never_a_name_that_is_no_user(user, caplog):
    # A password typed into the user-name field must not end up in the server log.
    for _ in range(3):
        page_login(user.username, "wrong", address="10.0.0.1")
        page_login("MyPassw0rd!", "wrong", address="10.0.0.2")

    locks = [record.getMessage() for record in caplog.records if "Login locked" in record.getMessage()]
    assert len(locks) == 2
    assert any(user.username in message and "10.0.0.1" in message for message in locks)
    assert not any("MyPassw0rd!" in message for message in locks)
