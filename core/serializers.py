"""The one progress shape of every background job (core.jobs.job_progress), declared once for the API schema."""

from __future__ import annotations

from rest_framework import serializers


class JobProgressOutput(serializers.Serializer):
    """What every job's progress endpoint returns; a job kind's serializer adds its own fields (and may redeclare
    done/total to say what it counts)."""

    id = serializers.IntegerField()
    kind = serializers.CharField(help_text="The kind of job: import, dataset_archive, scoring or training.")
    # A plain string: a ChoiceField named "status" in four serializers would fight over one schema enum name.
    status = serializers.CharField(help_text="queued, running, succeeded, failed or cancelled.")
    status_display = serializers.CharField()
    finished = serializers.BooleanField(help_text="True once it succeeded, failed or was cancelled: stop polling.")
    done = serializers.IntegerField(help_text="Units of work done so far.")
    total = serializers.IntegerField(help_text="Units of work in all; 0 until known.")
    percent = serializers.IntegerField(min_value=0, max_value=100)
    per_second = serializers.FloatField(allow_null=True, help_text="Units per second since a worker claimed it.")
    eta_seconds = serializers.IntegerField(allow_null=True, help_text="Seconds left at that rate, while running.")
    error = serializers.CharField(allow_blank=True)
    requested_at = serializers.DateTimeField(allow_null=True, help_text="When it was queued.")
    started_at = serializers.DateTimeField(allow_null=True, help_text="When a worker claimed it.")
    finished_at = serializers.DateTimeField(allow_null=True)
