"""Who am I, and API tokens: issued for a throttled login, revoked by their owner."""

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.services.tokens import token_obtain, token_revoke
from core.roles import user_roles


class MeOutput(serializers.Serializer):
    username = serializers.CharField()
    roles = serializers.ListField(child=serializers.CharField())


class MeApi(APIView):
    @extend_schema(responses=MeOutput)
    def get(self, request):
        roles = sorted(role.value for role in user_roles(request.user))
        return Response(MeOutput({"username": request.user.username, "roles": roles}).data)


class TokenInput(serializers.Serializer):
    username = serializers.CharField()
    password = serializers.CharField(trim_whitespace=False, style={"input_type": "password"})


class TokenOutput(serializers.Serializer):
    token = serializers.CharField()


class TokenApi(APIView):
    """POST username and password, get a token for the `Authorization: Token <key>` header; DELETE revokes it.

    Failed logins count with the login page's: too many answer 429 with Retry-After.
    """

    def get_permissions(self):
        # Anyone may exchange credentials for a token (they are the check); revoking needs a logged-in caller.
        return [] if self.request.method == "POST" else [IsAuthenticated()]

    @extend_schema(
        request=TokenInput,
        responses={
            200: TokenOutput,
            400: OpenApiResponse(description="Wrong user name or password."),
            429: OpenApiResponse(description="Too many failed logins; the Retry-After header says when to retry."),
        },
        auth=[],
    )
    def post(self, request):
        data = TokenInput(data=request.data)
        data.is_valid(raise_exception=True)
        token = token_obtain(request=request, **data.validated_data)
        return Response(TokenOutput({"token": token.key}).data)

    @extend_schema(request=None, responses={204: OpenApiResponse(description="The caller's token is revoked.")})
    def delete(self, request):
        token_revoke(user=request.user, revoked_by=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)
