"""Inference API: predictions on uploaded images (researchers, admins) and the active model's opinion on a
stored image with its Grad-CAM overlay and the similar cells of the index (adjudicators, researchers, admins; never
annotators)."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import TooManyFilesSent
from django.http import HttpResponse
from django.utils.cache import patch_cache_control
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from annotation import selectors as annotation_selectors
from annotation.selectors.blinding import image_require_visible
from core.permissions import roles_permission
from core.roles import Role
from core.serializers import JobProgressOutput
from inference.explain.heatmaps import image_heatmap_png
from inference.explain.links import heatmap_url
from inference.explain.opinion import image_opinion_state
from inference.explain.policy import EXPLAIN_ROLES
from inference.models import ScoringJob
from inference.predict import PredictLimits, images_predict
from inference.selectors import scoring_job_get, scoring_job_list, scoring_job_progress
from inference.serializers import OpinionOutput, PredictInput, PredictOutput, SimilarCellsOutput
from inference.services.neighbours import image_similar_cells
from inference.services.starts import scoring_start

CanPredict = roles_permission(Role.RESEARCHER, Role.ADMIN)
CanSeeOpinion = roles_permission(*EXPLAIN_ROLES)


class SettingsScopedRateThrottle(ScopedRateThrottle):
    """The view's `throttle_scope`, per user. The rate is read per request: DRF binds THROTTLE_RATES at import time,
    which would make a settings change (or a test's override) invisible."""

    def get_rate(self):
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)


_ERRORS = {
    400: OpenApiResponse(
        description="Not an image, a decompression bomb, a cell you may still label, too many files, or no file "
        "(the message names the file)."
    ),
    403: OpenApiResponse(description="Researchers and admins only."),
    409: OpenApiResponse(description="No active model yet."),
    413: OpenApiResponse(description="A file is larger than HEMALOOP_INFERENCE_MAX_FILE_BYTES."),
    429: OpenApiResponse(description="Rate limit (the 'inference' throttle scope) exceeded."),
    503: OpenApiResponse(description="The active model's files cannot be read."),
}


class PredictApi(APIView):
    """Score one or more uploaded images with the active ensemble.

    Multipart: repeat `images` once per file; `heatmap=true` adds a base64 PNG Grad-CAM overlay per image.
    Limits (settings): HEMALOOP_INFERENCE_MAX_FILES (16), HEMALOOP_INFERENCE_MAX_FILE_BYTES and
    HEMALOOP_INFERENCE_MAX_PIXELS (the import's limits). Rate-limited per user (scope "inference").
    """

    permission_classes = [CanPredict]
    parser_classes = [MultiPartParser, FormParser]
    throttle_classes = [SettingsScopedRateThrottle]
    throttle_scope = "inference"

    @extend_schema(request={"multipart/form-data": PredictInput}, responses={200: PredictOutput, **_ERRORS})
    def post(self, request):
        try:
            payload = request.data
        except TooManyFilesSent:  # Django's own cap stops parsing before we can count the files
            most = PredictLimits.from_settings().max_files
            raise ValidationError(
                {
                    "detail": f"More than {settings.DATA_UPLOAD_MAX_NUMBER_FILES} files sent; at most "
                    f"{most} images per request."
                }
            ) from None
        data = PredictInput(data=payload)
        data.is_valid(raise_exception=True)
        # PredictRejected (400, 413), NoActiveModel (409) and ModelUnavailable (503) reach the exception handler.
        result = images_predict(
            files=data.validated_data["images"], heatmap=data.validated_data["heatmap"], caller=request.user
        )
        return Response(PredictOutput(result).data)


_EXPLAIN_THROTTLED = OpenApiResponse(description="Rate limit (the 'explain' throttle scope) exceeded.")


def _image_for(request, image_id: int):
    image = annotation_selectors.image_get(image_id=image_id)
    # The permission class admits the explain roles only; what is left is the cell's blinding (CellHidden, 403).
    image_require_visible(user=request.user, image=image)
    return image


class ImageOpinionApi(APIView):
    """The active model's top-3 classes (calibrated) for a stored image, and the URL of its Grad-CAM overlay.

    No active model is a state (`no_model`), not an error. Annotators never get this. Rate-limited per user
    (scope "explain", shared with the overlay).
    """

    permission_classes = [CanSeeOpinion]
    throttle_classes = [SettingsScopedRateThrottle]
    throttle_scope = "explain"

    @extend_schema(
        responses={200: OpinionOutput, 403: OpenApiResponse(description="Not for annotators."), 429: _EXPLAIN_THROTTLED}
    )
    def get(self, request, image_id: int):
        image = _image_for(request, image_id)
        result = image_opinion_state(image=image)
        opinion = result.opinion
        return Response(
            OpinionOutput(
                {
                    "state": result.state,
                    "message": result.message,
                    "model_version": None
                    if opinion is None
                    else {
                        "id": opinion.model_version_id,
                        "name": opinion.model_version_name,
                    },
                    "top": [] if opinion is None else opinion.top,
                    "source": "" if opinion is None else opinion.source,
                    "heatmap_url": "" if opinion is None else heatmap_url(image_id=image.pk, opinion=opinion),
                }
            ).data
        )


class ImageSimilarCellsApi(APIView):
    """The cells with a final class most similar to a stored image in the embedding index (cosine similarity), with
    their final labels: a reference atlas from the lab's own cells. No index holding the cell yet is a state
    (`no_index`), not an error. Annotators never get this; a cell hidden from the caller answers as every hidden cell
    does. Rate-limited per user (scope "explain", shared with the opinion)."""

    permission_classes = [CanSeeOpinion]
    throttle_classes = [SettingsScopedRateThrottle]
    throttle_scope = "explain"

    @extend_schema(
        responses={
            200: SimilarCellsOutput,
            403: OpenApiResponse(description="Not for annotators; a cell hidden from you."),
            429: _EXPLAIN_THROTTLED,
        }
    )
    def get(self, request, image_id: int):
        image = _image_for(request, image_id)
        return Response(SimilarCellsOutput(image_similar_cells(image=image, viewer=request.user)).data)


class ImageHeatmapApi(APIView):
    """The active model's Grad-CAM overlay of a stored image as a PNG of the image's size (cached on disk).
    Rate-limited per user (scope "explain", shared with the opinion)."""

    permission_classes = [CanSeeOpinion]
    throttle_classes = [SettingsScopedRateThrottle]
    throttle_scope = "explain"

    @extend_schema(
        parameters=[OpenApiParameter("class", str, description="Class code to explain; default the predicted one.")],
        responses={
            (200, "image/png"): OpenApiTypes.BINARY,
            400: OpenApiResponse(description="Unknown class."),
            409: OpenApiResponse(description="No active model yet."),
            429: _EXPLAIN_THROTTLED,
            503: OpenApiResponse(description="The active model's files cannot be read."),
        },
    )
    def get(self, request, image_id: int):
        image = _image_for(request, image_id)
        try:  # NoActiveModel (409) and ModelUnavailable (503) reach the exception handler
            png = image_heatmap_png(image=image, class_code=request.query_params.get("class") or None)
        except ValueError as exc:
            raise ValidationError({"class": [str(exc)]}) from None
        response = HttpResponse(png, content_type="image/png")
        patch_cache_control(response, private=True, max_age=3600)
        return response


class ScoringJobOutput(JobProgressOutput):
    """The common job progress (the same keys for every kind of job) and the scoring pass's own fields."""

    done = serializers.IntegerField(help_text="Images scored so far.")
    total = serializers.IntegerField(help_text="Images in the pass (grows if images are imported while it runs).")
    model_version = serializers.IntegerField()
    scope = serializers.ChoiceField(choices=ScoringJob.Scope.choices)
    speed = serializers.CharField(allow_blank=True, help_text="The speed line the Scoring page shows.")


class ScoringJobsApi(APIView):
    """Scoring passes of the pool (admins). GET: the most recent ones. POST: rescore the whole pool with the
    active model on the inference queue (409 without an active model or while another pass is queued or running;
    one whose worker stopped reporting does not count)."""

    permission_classes = [roles_permission(Role.ADMIN)]

    @extend_schema(responses={200: ScoringJobOutput(many=True)})
    def get(self, request):
        return Response([scoring_job_progress(job=job) for job in scoring_job_list(limit=20)])

    @extend_schema(
        request=None,
        responses={202: ScoringJobOutput, 409: OpenApiResponse(description="No active model, or a pass is busy.")},
    )
    def post(self, request):
        job = scoring_start(actor=request.user)  # ScoringRefused: 409
        return Response(scoring_job_progress(job=job), status=status.HTTP_202_ACCEPTED)


class ScoringJobApi(APIView):
    """One scoring pass and its progress (admins)."""

    permission_classes = [roles_permission(Role.ADMIN)]

    @extend_schema(responses={200: ScoringJobOutput, 404: OpenApiResponse(description="No such job.")})
    def get(self, request, job_id: int):
        job = scoring_job_get(job_id=job_id)
        if job is None:
            raise NotFound("No such scoring job.")
        return Response(scoring_job_progress(job=job))
