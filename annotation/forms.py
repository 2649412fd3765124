"""Page forms for annotation: the image-list filters and the import upload."""
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
