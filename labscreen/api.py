"""Lab-screen API: a study's progress in the one job progress shape, plus its own fields (the study page polls it)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from core.errors import NotFoundError
from core.jobs import job_progress
from core.permissions import roles_permission
from core.roles import Role
from core.serializers import JobProgressOutput
from labscreen import selectors


class LabStudyOutput(JobProgressOutput):
    done = serializers.IntegerField(help_text="Model fits done (7 models x folds x 2 variants, the checks, the final).")
    title = serializers.CharField()
    cases = serializers.IntegerField()
    synthetic = serializers.BooleanField()
    is_screen = serializers.BooleanField()


class LabStudyDetailApi(APIView):
    permission_classes = [roles_permission(Role.RESEARCHER, Role.ADMIN)]

    @extend_schema(responses=LabStudyOutput)
    def get(self, request, study_id: int):
        study = selectors.lab_study_get(study_id=study_id)
        if study is None:
            raise NotFoundError("No such lab study.")
        fields = {
            "title": study.title,
            "cases": study.cases,
            "synthetic": study.synthetic,
            "is_screen": study.is_screen,
        }
        return Response(job_progress(study) | fields)
