"""ImportBatch becomes a core.jobs.Job: its fields take the common names and its statuses the common values."""

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models
from django.db.models import F
from django.db.models.functions import Coalesce

STATUSES = {"pending": "queued", "running": "running", "done": "succeeded", "failed": "failed"}
# Imports are never cancelled, so "cancelled" can only go back as a failure.
OLD_STATUSES = {"queued": "pending", "running": "running", "succeeded": "done", "failed": "failed", "cancelled": "failed"}


def statuses_to_job(apps, schema_editor):
    ImportBatch = apps.get_model("annotation", "ImportBatch")
    for old, new in STATUSES.items():
        ImportBatch.objects.filter(status=old).update(status=new)
    # The reaper judges a running batch by its last heartbeat: one started before heartbeats gets its start.
    ImportBatch.objects.filter(status="running", heartbeat_at__isnull=True).update(
        heartbeat_at=Coalesce(F("started_at"), F("requested_at"))
    )


def statuses_to_old(apps, schema_editor):
    ImportBatch = apps.get_model("annotation", "ImportBatch")
    for new, old in OLD_STATUSES.items():
        ImportBatch.objects.filter(status=new).update(status=old)


class Migration(migrations.Migration):
    dependencies = [
        ("annotation", "0003_final_method_choices"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RenameField(model_name="importbatch", old_name="created_by", new_name="requested_by"),
        migrations.RenameField(model_name="importbatch", old_name="created_at", new_name="requested_at"),
        migrations.RenameField(model_name="importbatch", old_name="processed", new_name="done"),
        migrations.AlterField(
            model_name="importbatch",
            name="requested_by",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.AlterField(
            model_name="importbatch",
            name="requested_at",
            field=models.DateTimeField(default=django.utils.timezone.now),
        ),
        migrations.AddField(
            model_name="importbatch",
            name="heartbeat_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AlterField(
            model_name="importbatch",
            name="status",
            field=models.CharField(
                choices=[
                    ("queued", "Queued"),
                    ("running", "Running"),
                    ("succeeded", "Succeeded"),
                    ("failed", "Failed"),
                    ("cancelled", "Cancelled"),
                ],
                default="queued",
                max_length=10,
            ),
        ),
        migrations.RunPython(statuses_to_job, statuses_to_old),
        migrations.AlterModelOptions(name="importbatch", options={"ordering": ["-requested_at"]}),
    ]
