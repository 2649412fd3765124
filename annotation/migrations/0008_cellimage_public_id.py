# Cells get a random public id, the only id annotators see (issue 11). Existing rows get random values too:
# a default evaluated once would give every row the same id, and one derived from the row would not be random.

import secrets

from django.db import migrations, models

import annotation.models

FILL_BATCH = 2000


def fill_public_ids(apps, schema_editor):
    CellImage = apps.get_model("annotation", "CellImage")
    pending = CellImage.objects.filter(public_id__isnull=True).order_by("pk").values_list("pk", flat=True)
    while ids := list(pending[:FILL_BATCH]):
        CellImage.objects.bulk_update(
            [CellImage(pk=pk, public_id=secrets.token_urlsafe(16)) for pk in ids], ["public_id"]
        )


class Migration(migrations.Migration):
    dependencies = [
        ("annotation", "0007_import_order_seed"),
    ]

    operations = [
        migrations.AddField(
            model_name="cellimage",
            name="public_id",
            field=models.CharField(editable=False, max_length=32, null=True),
        ),
        migrations.RunPython(fill_public_ids, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="cellimage",
            name="public_id",
            field=models.CharField(
                default=annotation.models.cell_public_id, editable=False, max_length=32, unique=True
            ),
        ),
    ]
