"""DatasetArchive becomes a core.jobs.Job: members_written/members_total become done/total, the statuses take
JobStatus's values (pending -> queued, done -> succeeded; "not built" stays), and a build gets heartbeats."""

from django.db import migrations, models
from django.db.models import OuterRef, Subquery
from django.db.models.functions import Coalesce

OLD_TO_NEW = {"pending": "queued", "done": "succeeded"}
# A cancelled build did not exist before; going back, it reads as failed.
NEW_TO_OLD = {"queued": "pending", "succeeded": "done", "cancelled": "failed"}


def statuses_to_job(apps, schema_editor):
    DatasetArchive = apps.get_model("releases", "DatasetArchive")
    DatasetVersion = apps.get_model("releases", "DatasetVersion")
    for old, new in OLD_TO_NEW.items():
        DatasetArchive.objects.filter(status=old).update(status=new)
    # requested_at becomes required (next migration): a row nobody asked to build dates from its version's cut.
    created = DatasetVersion.objects.filter(pk=OuterRef("version_id")).values("created_at")[:1]
    DatasetArchive.objects.filter(requested_at__isnull=True).update(requested_at=Subquery(created))
    # The reaper reads heartbeats: a build running during the upgrade counts from when it started.
    DatasetArchive.objects.filter(status="running", heartbeat_at__isnull=True).update(
        heartbeat_at=Coalesce("started_at", "requested_at")
    )


def statuses_from_job(apps, schema_editor):
    DatasetArchive = apps.get_model("releases", "DatasetArchive")
    for new, old in NEW_TO_OLD.items():
        DatasetArchive.objects.filter(status=new).update(status=old)


class Migration(migrations.Migration):
    dependencies = [
        ("releases", "0001_initial"),
    ]

    operations = [
        migrations.RenameField(model_name="datasetarchive", old_name="members_written", new_name="done"),
        migrations.RenameField(model_name="datasetarchive", old_name="members_total", new_name="total"),
        migrations.AddField(
            model_name="datasetarchive",
            name="heartbeat_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AlterField(
            model_name="datasetarchive",
            name="status",
            field=models.CharField(
                choices=[
                    ("not_built", "Not built"),
                    ("queued", "Queued"),
                    ("running", "Building"),
                    ("succeeded", "Done"),
                    ("failed", "Failed"),
                    ("cancelled", "Cancelled"),
                ],
                default="not_built",
                max_length=10,
            ),
        ),
        # Last: PostgreSQL may refuse to alter a table whose updated rows left deferred trigger events in the
        # same transaction, so the columns this data fills are altered in the next migration.
        migrations.RunPython(statuses_to_job, statuses_from_job),
    ]
