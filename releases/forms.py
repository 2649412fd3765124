"""Forms of the releases pages: cutting a version, choosing two versions to compare."""

from __future__ import annotations

from django import forms


class VersionCreateForm(forms.Form):
    title = forms.CharField(max_length=200, required=False, help_text="Optional, e.g. “Paper submission, March 2026”.")
    notes = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Optional; shown on the version page and at the top of its datasheet.",
    )


class DiffForm(forms.Form):
    old = forms.TypedChoiceField(coerce=int, label="From")
    new = forms.TypedChoiceField(coerce=int, label="To")

    def __init__(self, *args, numbers: list[int], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        choices = [(number, f"v{number}") for number in numbers]
        self.fields["old"].choices = choices
        self.fields["new"].choices = choices

    @classmethod
    def for_request(cls, query, *, numbers: list[int]) -> DiffForm:
        """Bound to the query string; without one, the two newest versions are compared."""
        if "old" not in query and len(numbers) >= 2:
            query = {"old": numbers[1], "new": numbers[0]}
        return cls(query if "old" in query else None, numbers=numbers)
