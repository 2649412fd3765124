"""Seed the ICD-10 -> outcome mapping: lymphoid, hematopoietic and related malignancies (C81-C96) and the myeloid
neoplasms of D45-D47 (polycythaemia vera, myelodysplastic syndromes, other neoplasms of uncertain behaviour of
lymphoid, haematopoietic and related tissue) are malignant; every code no rule matches is non-malignant. Admins edit
the rows afterwards; this migration never overwrites them."""

from django.db import migrations

RULES = [
    ("C81", "C96", "malignant", "Malignant neoplasms of lymphoid, haematopoietic and related tissue"),
    ("D45", "D45", "malignant", "Polycythaemia vera"),
    ("D46", "D46", "malignant", "Myelodysplastic syndromes"),
    ("D47", "D47", "malignant", "Other neoplasms of uncertain behaviour of lymphoid, haematopoietic and related tissue"),
]


def seed(apps, schema_editor):
    OutcomeRule = apps.get_model("labscreen", "OutcomeRule")
    for start, end, outcome, note in RULES:
        OutcomeRule.objects.get_or_create(start=start, end=end, defaults={"outcome": outcome, "note": note})


def unseed(apps, schema_editor):
    OutcomeRule = apps.get_model("labscreen", "OutcomeRule")
    for start, end, _, _ in RULES:
        OutcomeRule.objects.filter(start=start, end=end).delete()


class Migration(migrations.Migration):
    dependencies = [("labscreen", "0001_initial")]
    operations = [migrations.RunPython(seed, unseed)]
