"""Who am I, and token issue for API clients."""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.response import Response
from rest_framework.views import APIView

from core.roles import user_roles


class MeOutput(serializers.Serializer):
    username = serializers.CharField()
    roles = serializers.ListField(child=serializers.CharField())


class MeApi(APIView):
    @extend_schema(responses=MeOutput)
    def get(self, request):
        roles = sorted(role.value for role in user_roles(request.user))
        return Response(MeOutput({"username": request.user.username, "roles": roles}).data)


class TokenApi(ObtainAuthToken):
    """POST username and password, get a token for the `Authorization: Token <key>` header."""

    permission_classes = ()  # the credentials are the check
