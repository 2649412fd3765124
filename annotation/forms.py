"""Page forms for annotation: the image-list filters, the import upload, re-opening a label, agreement filters."""

from __future__ import annotations

from django import forms

from annotation.models import ImportItem
from annotation.selectors import IMAGE_STATUS_LABELS, ImageStatus, batch_list, case_list, taxonomy_list
from annotation.services.metadata import CSV_COLUMNS


class ImageFilterForm(forms.Form):
    case = forms.ModelChoiceField(queryset=None, required=False, empty_label="All cases")
    batch = forms.ModelChoiceField(queryset=None, required=False, empty_label="All batches")
    reference_label = forms.ModelChoiceField(
        queryset=None, required=False, to_field_name="code", empty_label="Any reference label"
    )
    status = forms.ChoiceField(
        choices=[("", "Any status"), *((s.value, IMAGE_STATUS_LABELS[s]) for s in ImageStatus)], required=False
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["case"].queryset = case_list()
        self.fields["batch"].queryset = batch_list()
        self.fields["reference_label"].queryset = taxonomy_list()

    def selector_filters(self) -> dict:
        """The validated filters as keyword arguments of selectors.image_list."""
        data = self.cleaned_data
        status = ImageStatus(data["status"]) if data.get("status") else None
        return {
            "case": data.get("case"),
            "batch": data.get("batch"),
            "reference_label": data.get("reference_label"),
            "status": status,
        }


class BatchUploadForm(forms.Form):
    upload = forms.FileField(
        label="Zip archive of cell images",
        widget=forms.ClearableFileInput(attrs={"accept": ".zip,application/zip"}),
    )
    csv_upload = forms.FileField(
        label="Metadata CSV (optional)",
        required=False,
        help_text=f"Columns: {', '.join(CSV_COLUMNS)} (file is the image's path inside the zip).",
        widget=forms.ClearableFileInput(attrs={"accept": ".csv,text/csv"}),
    )
    trusted = forms.BooleanField(
        label="Trusted source: reference labels become final labels",
        required=False,
        help_text="Only for labels already confirmed by experts. These images skip the labeling queue.",
    )
    case_from_folder = forms.BooleanField(
        label="Case from folder",
        required=False,
        help_text="Use each image's top-level folder in the zip as its case id.",
    )


class BatchItemFilterForm(forms.Form):
    outcome = forms.ChoiceField(choices=[("", "All"), *ImportItem.Outcome.choices], required=False)


class ReopenForm(forms.Form):
    reason = forms.CharField(
        label="Reason for re-opening",
        max_length=2000,
        strip=True,
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "e.g. Nucleus shape suggests a blast; second opinion"}),
        help_text="Required. Kept in the image's history; the cell goes back to the consensus queue.",
    )


class AgreementFilterForm(forms.Form):
    """The same filters as /api/annotation/agreement/ (batch id, dates of the second label)."""

    batch = forms.ModelChoiceField(queryset=None, required=False, empty_label="All import batches")
    date_from = forms.DateField(required=False, label="From", widget=forms.DateInput(attrs={"type": "date"}))
    date_to = forms.DateField(required=False, label="To", widget=forms.DateInput(attrs={"type": "date"}))

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["batch"].queryset = batch_list()

    def clean(self):
        data = super().clean()
        if data.get("date_from") and data.get("date_to") and data["date_from"] > data["date_to"]:
            raise forms.ValidationError("The start date is after the end date.")
        return data

    def selector_filters(self) -> dict:
        """The validated filters as keyword arguments of selectors.agreement.agreement_stats."""
        data = self.cleaned_data
        return {
            "batch_id": data["batch"].pk if data.get("batch") else None,
            "date_from": data.get("date_from"),
            "date_to": data.get("date_to"),
        }

    def query_params(self) -> dict[str, str]:
        """The validated filters as the API's query parameters (for the heatmap picture)."""
        filters = self.selector_filters()
        params = {"batch": filters["batch_id"], "date_from": filters["date_from"], "date_to": filters["date_to"]}
        return {key: str(value) for key, value in params.items() if value is not None}
