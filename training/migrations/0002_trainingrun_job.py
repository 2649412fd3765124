"""TrainingRun becomes a core.jobs.Job: started_by and created_at take Job's names, done/total count the run's
batches (filled from the epoch/batch fields of existing rows, so a running run keeps its percent), and the row's
own eta_seconds goes (job_progress computes the time left from done/total). The status values were already Job's."""

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models


def done_total_from_position(apps, schema_editor):
    TrainingRun = apps.get_model("training", "TrainingRun")
    for run in TrainingRun.objects.filter(batches_total__gt=0, max_epochs__gt=0):
        epochs_before = run.model_index * run.max_epochs + max(0, run.epoch - 1)
        run.done = epochs_before * run.batches_total + run.batch
        run.total = run.model_count * run.max_epochs * run.batches_total
        run.save(update_fields=["done", "total"])


class Migration(migrations.Migration):
    dependencies = [
        ("training", "0001_initial"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RenameField(model_name="trainingrun", old_name="started_by", new_name="requested_by"),
        migrations.RenameField(model_name="trainingrun", old_name="created_at", new_name="requested_at"),
        migrations.AlterModelOptions(name="trainingrun", options={"ordering": ["-requested_at", "-id"]}),
        migrations.AlterField(
            model_name="trainingrun",
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
            model_name="trainingrun",
            name="requested_at",
            field=models.DateTimeField(default=django.utils.timezone.now),
        ),
        migrations.AddField(
            model_name="trainingrun", name="done", field=models.PositiveIntegerField(default=0)
        ),
        migrations.AddField(
            model_name="trainingrun", name="total", field=models.PositiveIntegerField(default=0)
        ),
        migrations.RunPython(done_total_from_position, migrations.RunPython.noop),
        migrations.RemoveField(model_name="trainingrun", name="eta_seconds"),
    ]
