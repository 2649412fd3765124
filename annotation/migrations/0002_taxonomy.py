"""Seed the 12 classes of Park et al. (2024). Codes are stable: they appear in dataset manifests."""
from django.db import migrations

TAXONOMY = [
    # code, display name, group, hotkey
    ("neutrophil", "Neutrophil", "normal", "1"),
    ("band_neutrophil", "Band neutrophil", "normal", "2"),
    ("eosinophil", "Eosinophil", "normal", "3"),
    ("basophil", "Basophil", "normal", "4"),
    ("monocyte", "Monocyte", "normal", "5"),
    ("lymphocyte", "Lymphocyte", "normal", "6"),
    ("variant_lymphocyte", "Variant lymphocyte", "normal", "7"),
    ("myeloblast", "Myeloblast", "immature", "8"),
    ("lymphoblast", "Lymphoblast", "immature", "9"),
    ("myelocyte", "Myelocyte", "immature", "0"),
    ("metamyelocyte", "Metamyelocyte", "immature", "-"),
    ("promyelocyte", "Promyelocyte", "immature", "="),
]


def seed(apps, schema_editor):
    CellClass = apps.get_model("annotation", "CellClass")
    for order, (code, name, group, hotkey) in enumerate(TAXONOMY, start=1):
        CellClass.objects.update_or_create(
            code=code, defaults={"name": name, "group": group, "hotkey": hotkey, "order": order}
        )


def unseed(apps, schema_editor):
    apps.get_model("annotation", "CellClass").objects.filter(code__in=[t[0] for t in TAXONOMY]).delete()


class Migration(migrations.Migration):
    dependencies = [("annotation", "0001_initial")]
    operations = [migrations.RunPython(seed, unseed)]
