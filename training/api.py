"""Training API: retrain runs (admins start and cancel, researchers watch) and model versions (admins activate)."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.views import APIView

from core.jobs import job_progress
from core.permissions import roles_permission
from core.roles import Role
from core.serializers import JobProgressOutput
from releases.models import DatasetVersion
from training import selectors
from training.models import ModelVersion, TrainingRun
from training.services.runs import (
    PROFILES,
    training_default_profile,
    training_run_cancel,
    training_run_start,
    training_weights_plans,
)
from training.services.versions import model_version_activate

READ_ROLES = roles_permission(Role.RESEARCHER, Role.ADMIN)
ADMIN_ONLY = roles_permission(Role.ADMIN)

# --- serializers -----------------------------------------------------------------------------------


class RunStartInput(serializers.Serializer):
    profile = serializers.ChoiceField(
        choices=PROFILES,
        required=False,
        help_text="Omit for the default: paper where its members' ImageNet weights can be had, else lite "
        "(GET weights/ says which, and why).",
    )
    dataset_version = serializers.SlugRelatedField(
        slug_field="number",
        queryset=DatasetVersion.objects.all(),
        required=False,
        allow_null=True,
        help_text="Version number to train on; omit to freeze the current labels into a new version first.",
    )


class MemberWeightsOutput(serializers.Serializer):
    model = serializers.CharField()
    source = serializers.CharField(help_text="bundled, local, timm-cache, timm-hub, random or unavailable")
    detail = serializers.CharField()
    pretrained = serializers.BooleanField(help_text="Whether the member starts from ImageNet weights.")


class WeightsPlanOutput(serializers.Serializer):
    """Where each member of a run would start from (for a run: did start from), decided before it is queued."""

    profile = serializers.CharField()
    pretrained = serializers.CharField(help_text="The weights source the run's config trains with.")
    starts_random = serializers.BooleanField(help_text="Some member starts from random weights: a weak model.")
    unavailable = serializers.BooleanField(help_text="Some member's weights cannot be had: the start is refused.")
    message = serializers.CharField()
    members = MemberWeightsOutput(many=True)
    default = serializers.BooleanField(
        required=False, help_text="The profile a run started without one gets now (absent on a run's record)."
    )
    default_reason = serializers.CharField(required=False, help_text="Why this profile is the default (or is not).")


class WeightsPlanQuery(serializers.Serializer):
    profile = serializers.ChoiceField(choices=PROFILES, required=False, help_text="One profile; omit for all.")


class RunFieldsOutput(serializers.ModelSerializer):
    """The run's own fields: what it trains on, where it is (model, epoch, batch), its history, log and version."""

    url = serializers.SerializerMethodField()
    dataset_version = serializers.SlugRelatedField(slug_field="number", read_only=True)
    requested_by = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True, help_text="Who asked for it; null once deleted."
    )
    model_version = serializers.SerializerMethodField()
    weights = serializers.SerializerMethodField(
        help_text="Where each member's weights came from, decided at the start; null for runs older than that."
    )

    class Meta:
        model = TrainingRun
        fields = [
            "id",
            "url",
            "dataset_version",
            "profile",
            "config",
            "weights",
            "requested_by",
            "worker_host",
            "heartbeat_at",
            "model_index",
            "model_name",
            "model_count",
            "epoch",
            "max_epochs",
            "batch",
            "batches_total",
            "cancel_requested",
            "history",
            "log_tail",
            "model_version",
        ]
        read_only_fields = fields

    def get_url(self, run: TrainingRun) -> str:
        return reverse("training_api:run_detail", kwargs={"run_id": run.pk}, request=self.context["request"])

    @extend_schema_field(WeightsPlanOutput(allow_null=True))
    def get_weights(self, run: TrainingRun) -> dict | None:
        return run.weights or None

    def get_model_version(self, run: TrainingRun) -> int | None:
        version = getattr(run, "model_version", None)
        return version.pk if version else None


class RunOutput(JobProgressOutput, RunFieldsOutput):
    """A run: the progress every job API shares (core.jobs.job_progress) plus the run's own fields. done/total
    count batches over every model and epoch; percent stays below 100 until the version is registered."""

    done = serializers.IntegerField(help_text="Batches trained so far, over every model and epoch.")
    total = serializers.IntegerField(help_text="Batches the run plans in all (an upper bound: early stopping).")
    eta_seconds = serializers.IntegerField(
        allow_null=True, help_text="Seconds left while running, an upper bound (early stopping ends models sooner)."
    )

    class Meta(RunFieldsOutput.Meta):
        fields = [
            "kind",
            "status",
            "status_display",
            "finished",
            "done",
            "total",
            "percent",
            "per_second",
            "eta_seconds",
            "error",
            "requested_at",
            "started_at",
            "finished_at",
            *RunFieldsOutput.Meta.fields,
        ]
        read_only_fields = fields

    def to_representation(self, run: TrainingRun) -> dict:
        return {**job_progress(run), **RunFieldsOutput(run, context=self.context).data}


class ModelVersionOutput(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()
    status = serializers.CharField(help_text="candidate, active or retired")
    kind = serializers.CharField(help_text="ensemble (a training run's) or head (a queue refresh's, on the index)")
    macro_f1 = serializers.FloatField(
        read_only=True, allow_null=True, help_text="Test macro-F1; a head's case-grouped cross-validated macro-F1."
    )
    activated_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = ModelVersion
        fields = [
            "id",
            "url",
            "kind",
            "run",
            "status",
            "macro_f1",
            "temperature",
            "created_at",
            "activated_at",
            "activated_by",
        ]
        read_only_fields = fields

    def get_url(self, version: ModelVersion) -> str:
        return reverse("training_api:model_detail", kwargs={"version_id": version.pk}, request=self.context["request"])


class ModelVersionDetailOutput(ModelVersionOutput):
    class Meta(ModelVersionOutput.Meta):
        fields = [*ModelVersionOutput.Meta.fields, "out_dir", "config", "metrics", "plots"]
        read_only_fields = fields


# --- views -----------------------------------------------------------------------------------------


def _run_or_404(run_id: int) -> TrainingRun:
    run = selectors.training_run_get(run_id=run_id)
    if run is None:
        raise NotFound("No such training run.")
    return run


def _version_or_404(version_id: int) -> ModelVersion:
    version = selectors.model_version_get(version_id=version_id)
    if version is None:
        raise NotFound("No such model version.")
    return version


class RunListStartApi(APIView):
    def get_permissions(self):
        return [ADMIN_ONLY() if self.request.method == "POST" else READ_ROLES()]

    @extend_schema(responses=RunOutput(many=True), summary="Training runs, newest first")
    def get(self, request: Request):
        runs = selectors.training_run_list()[:100]
        return Response(RunOutput(runs, many=True, context={"request": request}).data)

    @extend_schema(
        request=RunStartInput,
        summary="Start a retrain (admins)",
        responses={
            201: RunOutput,
            400: OpenApiResponse(description="Unusable dataset version or profile."),
            409: OpenApiResponse(description="Another run is queued or running."),
        },
    )
    def post(self, request: Request):
        serializer = RunStartInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        run = training_run_start(requested_by=request.user, **serializer.validated_data)
        return Response(RunOutput(_run_or_404(run.pk), context={"request": request}).data, status=201)


class WeightsPlanApi(APIView):
    permission_classes = [READ_ROLES]

    @extend_schema(
        parameters=[WeightsPlanQuery],
        responses=WeightsPlanOutput(many=True),
        summary="Where each profile's members would get their weights if a run started now",
    )
    def get(self, request: Request):
        query = WeightsPlanQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        profile = query.validated_data.get("profile")
        plans = training_weights_plans()
        default = training_default_profile(plans=plans)
        rows = [
            {**plan.to_dict(), "default": plan.profile == default.profile, "default_reason": default.reason}
            for plan in plans
            if profile in (None, plan.profile)
        ]
        return Response(WeightsPlanOutput(rows, many=True).data)


class RunDetailApi(APIView):
    permission_classes = [READ_ROLES]

    @extend_schema(responses=RunOutput, summary="A run with its live progress and per-epoch history (poll this)")
    def get(self, request: Request, run_id: int):
        return Response(RunOutput(_run_or_404(run_id), context={"request": request}).data)


class RunCancelApi(APIView):
    permission_classes = [ADMIN_ONLY]

    @extend_schema(
        request=None,
        responses=RunOutput,
        summary="Cancel a run (admins): at once if queued, after the current batch if running",
    )
    def post(self, request: Request, run_id: int):
        run = training_run_cancel(run=_run_or_404(run_id), actor=request.user)
        return Response(RunOutput(_run_or_404(run.pk), context={"request": request}).data)


class ModelVersionListApi(APIView):
    permission_classes = [READ_ROLES]

    @extend_schema(responses=ModelVersionOutput(many=True), summary="Model versions, newest first")
    def get(self, request: Request):
        versions = selectors.model_version_list()[:100]
        return Response(ModelVersionOutput(versions, many=True, context={"request": request}).data)


class ModelVersionDetailApi(APIView):
    permission_classes = [READ_ROLES]

    @extend_schema(responses=ModelVersionDetailOutput, summary="A model version with its full test metrics")
    def get(self, request: Request, version_id: int):
        return Response(ModelVersionDetailOutput(_version_or_404(version_id), context={"request": request}).data)


class ModelVersionActivateApi(APIView):
    permission_classes = [ADMIN_ONLY]

    @extend_schema(
        request=None,
        responses=ModelVersionOutput,
        summary="Activate a model version (admins); the previously active one is retired",
    )
    def post(self, request: Request, version_id: int):
        version = model_version_activate(version=_version_or_404(version_id), actor=request.user)
        return Response(ModelVersionOutput(version, context={"request": request}).data)
