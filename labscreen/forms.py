"""The lab import upload and the study start form."""

from __future__ import annotations

from django import forms

from labscreen.ml.models import MODEL_LABELS, MODEL_NAMES


class LabImportForm(forms.Form):
    file = forms.FileField(help_text="CSV (UTF-8; comma or semicolon) or XLSX, one row per case.")
    create_cases = forms.BooleanField(required=False, label="Create cases that do not exist yet (else reject the file)")
    synthetic = forms.BooleanField(required=False, label="This is synthetic (generated) data")


class StudyStartForm(forms.Form):
    title = forms.CharField(max_length=200, required=False)
    folds = forms.IntegerField(min_value=2, max_value=20, initial=10)
    top_k = forms.IntegerField(min_value=1, max_value=500, required=False, help_text="Variables kept (step 5).")
    max_missing = forms.FloatField(min_value=0, max_value=1, initial=0.9, label="Exclude cases with more missing")
    models = forms.MultipleChoiceField(
        choices=[(name, MODEL_LABELS[name]) for name in MODEL_NAMES],
        initial=list(MODEL_NAMES),
        widget=forms.CheckboxSelectMultiple,
    )
    nn_max_iter = forms.IntegerField(min_value=1, max_value=2000, initial=300, label="Neural network epochs")
    bootstrap = forms.IntegerField(min_value=0, max_value=10_000, initial=1000, label="Bootstrap resamples")
    seed = forms.IntegerField(min_value=0, initial=0)

    def study_settings(self) -> dict:
        data = dict(self.cleaned_data)
        data["models"] = tuple(data["models"])
        data.pop("title")
        return data
