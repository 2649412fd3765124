"""The login form, throttled like the token endpoint."""

from django import forms
from django.contrib.auth.forms import AuthenticationForm

from accounts.services.login_throttle import LoginLocked, login_attempt


class LoginForm(AuthenticationForm):
    error_messages = {
        **AuthenticationForm.error_messages,
        "invalid_login": "Wrong user name or password. Please try again.",
    }

    def clean(self):
        username = self.cleaned_data.get("username")
        password = self.cleaned_data.get("password")
        if username is not None and password:
            try:
                self.user_cache = login_attempt(request=self.request, username=username, password=password)
            except LoginLocked as locked:
                raise forms.ValidationError(locked.message, code=locked.code) from locked
            if self.user_cache is None:
                raise self.get_invalid_login_error()
            self.confirm_login_allowed(self.user_cache)
        return self.cleaned_data
