"""ScoringJob becomes a core.jobs.Job: its fields take Job's names (started_by -> requested_by, started_at -> the
queue time requested_at, running_at -> the claim time started_at, updated_at -> heartbeat_at), rows keep their data.

The status values were already Job's (queued, running, succeeded, failed). What changes is the task: it now takes
the job's id, where it took a model version's id, so a job still queued from before the upgrade has a message no
worker will run; it is failed with a note (Rescore starts it again) instead of blocking Rescore forever.
"""

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models

UPGRADE_NOTE = "Queued before an upgrade changed how scoring jobs are queued; start it again with Rescore."


def fail_queued_before_upgrade(apps, schema_editor):
    ScoringJob = apps.get_model("inference", "ScoringJob")
    now = django.utils.timezone.now()
    ScoringJob.objects.filter(status="queued").update(status="failed", error=UPGRADE_NOTE, finished_at=now)


def requeue_failed_by_upgrade(apps, schema_editor):
    ScoringJob = apps.get_model("inference", "ScoringJob")
    ScoringJob.objects.filter(status="failed", error=UPGRADE_NOTE).update(status="queued", error="", finished_at=None)


class Migration(migrations.Migration):
    dependencies = [
        ("inference", "0003_scoring_job_running_at"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RenameField("scoringjob", "started_by", "requested_by"),
        migrations.RenameField("scoringjob", "started_at", "requested_at"),
        migrations.RenameField("scoringjob", "running_at", "started_at"),
        migrations.RenameField("scoringjob", "updated_at", "heartbeat_at"),
        migrations.AlterModelOptions(name="scoringjob", options={"ordering": ["-requested_at", "-id"]}),
        migrations.AlterField(
            model_name="scoringjob",
            name="requested_at",
            field=models.DateTimeField(default=django.utils.timezone.now),
        ),
        migrations.AlterField(
            model_name="scoringjob",
            name="heartbeat_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AlterField(
            model_name="scoringjob",
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
            model_name="scoringjob",
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
        migrations.RunPython(fail_queued_before_upgrade, requeue_failed_by_upgrade),
    ]
