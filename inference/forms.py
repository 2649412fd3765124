"""Form of the active-learning settings page; the ranges come from the model's validators."""

from __future__ import annotations

from django import forms

from inference.models import ActiveLearningSettings
from inference.services.settings import AL_SETTINGS_FIELDS


class ActiveLearningSettingsForm(forms.ModelForm):
    class Meta:
        model = ActiveLearningSettings
        fields = AL_SETTINGS_FIELDS
        labels = {
            "cold_start": "Cold start",
            "strategy": "Selection strategy",
            "exploration": "Exploration share",
            "max_class_share": "Class cap (share per predicted class)",
            "top_n": "Images prioritised",
            "review_min_confidence": "Review list: minimum model confidence",
        }
        widgets = {
            "exploration": forms.NumberInput(attrs={"step": "0.01"}),
            "max_class_share": forms.NumberInput(attrs={"step": "0.01"}),
            "review_min_confidence": forms.NumberInput(attrs={"step": "0.01"}),
        }
