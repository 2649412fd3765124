"""API tokens: issued for a correct login, revoked by their owner (API or page) or by an admin; a revoked token is
answered 401, and the admin never shows keys."""

from __future__ import annotations

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from core.roles import Role

PASSWORD = "right-horse-battery-staple"  # noqa: S105 - a test-only password


@pytest.fixture
def user(make_user):
    return make_user(Role.ANNOTATOR, password=PASSWORD)


def token_client(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def obtain(username: str, password: str):
    return APIClient().post("/api/accounts/token/", {"username": username, "password": password}, format="json")


def assert_refused(key: str) -> None:
    response = token_client(key).get("/api/accounts/me/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"


def test_the_token_endpoint_gives_a_token_for_a_correct_login_only(user):
    response = obtain(user.username, PASSWORD)
    assert response.status_code == 200
    assert token_client(response.json()["token"]).get("/api/accounts/me/").json()["username"] == user.username
    assert obtain(user.username, PASSWORD).json() == response.json()  # the same token until it is revoked

    wrong = obtain(user.username, "wrong")
    assert wrong.status_code == 400
    assert wrong.json()["code"] == "invalid_login"


def test_a_user_revokes_their_token_over_the_api_and_the_next_login_gets_a_new_one(user):
    old = obtain(user.username, PASSWORD).json()["token"]

    assert token_client(old).delete("/api/accounts/token/").status_code == 204
    assert_refused(old)
    assert token_client(old).delete("/api/accounts/token/").status_code == 401

    new = obtain(user.username, PASSWORD).json()["token"]
    assert new != old
    assert token_client(new).get("/api/accounts/me/").status_code == 200


def test_a_user_revokes_their_token_on_the_api_token_page(user, client_for):
    old = obtain(user.username, PASSWORD).json()["token"]
    client = client_for(user)

    page = client.get("/accounts/token/").content.decode()
    assert "Revoke my API token" in page
    assert old not in page  # the page says a token exists; it never shows the key

    response = client.post("/accounts/token/", follow=True)
    page = response.content.decode()
    assert "Your API token is revoked" in page
    assert "You have no API token" in page
    assert_refused(old)


def test_the_top_bar_links_to_the_api_token_page(user, client_for):
    assert 'href="/accounts/token/"' in client_for(user).get("/accounts/token/").content.decode()


def test_an_admin_revokes_the_tokens_of_the_selected_users(admin_user, make_user, client_for, api_client_for):
    leaked, other = make_user(Role.ANNOTATOR), make_user(Role.ANNOTATOR)
    api_client_for(leaked), api_client_for(other)
    leaked_key, other_key = Token.objects.get(user=leaked).key, Token.objects.get(user=other).key

    response = client_for(admin_user).post(
        "/admin/auth/user/",
        {"action": "revoke_api_tokens", "_selected_action": [leaked.pk]},
        follow=True,
    )
    assert "Revoked 1 API token." in response.content.decode()
    assert_refused(leaked_key)
    history = client_for(admin_user).get(f"/admin/auth/user/{leaked.pk}/history/").content.decode()
    assert "Revoked the API token." in history
    assert token_client(other_key).get("/api/accounts/me/").status_code == 200


def test_a_new_password_set_by_an_admin_revokes_the_token_issued_for_the_old_one(user, admin_user, client_for):
    old = obtain(user.username, PASSWORD).json()["token"]
    client_for(user)  # a login saves last_login: not a password change, the token stays
    assert token_client(old).get("/api/accounts/me/").status_code == 200

    response = client_for(admin_user).post(
        f"/admin/auth/user/{user.pk}/password/",
        {"usable_password": "true", "password1": "new-horse-battery-staple", "password2": "new-horse-battery-staple"},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    assert_refused(old)
    assert obtain(user.username, PASSWORD).status_code == 400
    assert obtain(user.username, "new-horse-battery-staple").json()["token"] != old


def test_changepassword_and_disabling_password_login_revoke_the_token(user):
    key = obtain(user.username, PASSWORD).json()["token"]
    user.set_password("another-horse-battery-staple")  # what manage.py changepassword does
    user.save()
    assert_refused(key)

    key = obtain(user.username, "another-horse-battery-staple").json()["token"]
    user.set_unusable_password()
    user.save()
    assert_refused(key)


def test_the_admin_token_list_shows_who_holds_a_token_but_never_the_key(
    admin_user, annotator, client_for, api_client_for
):
    api_client_for(annotator)
    key = Token.objects.get(user=annotator).key
    client = client_for(admin_user)

    listing = client.get("/admin/authtoken/tokenproxy/").content.decode()
    assert annotator.username in listing
    assert key not in listing
    for page in ("change", "delete", "history"):
        response = client.get(f"/admin/authtoken/tokenproxy/{annotator.pk}/{page}/")
        assert response.status_code == 403
        assert key not in response.content.decode()
    assert client.get("/admin/authtoken/tokenproxy/add/").status_code == 403


def test_a_request_without_credentials_is_still_refused_with_403():
    assert APIClient().get("/api/accounts/me/").status_code == 403
