"""Project-wide API plumbing: the one place errors become HTTP responses."""

from __future__ import annotations

import logging
from typing import Any

import kombu.exceptions
import redis
from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError as DatabaseInterfaceError
from django.db import OperationalError as DatabaseOperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404
from django.views.defaults import page_not_found, server_error
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler

from chatdesk.auth import request_user
from chatdesk.exceptions import ChatdeskError, ServiceUnavailable
from chatdesk.models import ApiToken
from chatdesk.serializers import ApiTokenCreatedSerializer, ApiTokenCreateSerializer, ApiTokenSerializer
from chatdesk.services import api_token_create

logger = logging.getLogger(__name__)


# A service that went away mid-request: the request's transaction rolled back, so nothing was stored.
UNAVAILABLE_ERRORS = (
    DatabaseOperationalError,
    DatabaseInterfaceError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    kombu.exceptions.OperationalError,
)
RETRY_AFTER_SECONDS = 5


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Return DRF's response for ``exc``; map chatdesk errors, outages and oversized bodies too."""
    if isinstance(exc, UNAVAILABLE_ERRORS):
        logger.warning("Answering 503: %s: %s", type(exc).__name__, exc)
        exc = ServiceUnavailable()
    if isinstance(exc, ChatdeskError):
        response = Response({**exc.extra, "detail": exc.message}, status=exc.status_code)
        if isinstance(exc, ServiceUnavailable):
            response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
    if isinstance(exc, RequestDataTooBig):
        return Response(
            {"detail": "Request body too large."}, status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
        )
    return drf_exception_handler(exc, context)


class ApiTokenListView(APIView):
    @extend_schema(summary="List your API tokens", responses={200: ApiTokenSerializer(many=True)})
    def get(self, request: Request) -> Response:
        return Response(
            ApiTokenSerializer(ApiToken.objects.filter(user=request_user(request)), many=True).data
        )

    @extend_schema(
        summary="Create an API token",
        description="The response holds `token`, shown only this once. Use it as `Authorization: Bearer <token>`.",
        request=ApiTokenCreateSerializer,
        responses={201: ApiTokenCreatedSerializer},
    )
    def post(self, request: Request) -> Response:
        data = ApiTokenCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        token, raw = api_token_create(user=request_user(request), name=data.validated_data["name"])
        token.token = raw  # type: ignore[attr-defined]
        return Response(ApiTokenCreatedSerializer(token).data, status=status.HTTP_201_CREATED)


class ApiTokenDetailView(APIView):
    @extend_schema(summary="Get an API token's details", responses={200: ApiTokenSerializer})
    def get(self, request: Request, pk: int) -> Response:
        return Response(
            ApiTokenSerializer(get_object_or_404(ApiToken, pk=pk, user=request_user(request))).data
        )

    @extend_schema(summary="Revoke an API token", responses={204: None})
    def delete(self, request: Request, pk: int) -> Response:
        get_object_or_404(ApiToken, pk=pk, user=request_user(request)).delete()
        return Response(status=status.HTTP_204_NO_CONTENT)


def json_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """404 handler: JSON under /api/ (API clients parse it), Django's page elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Not found."}, status=404)
    return page_not_found(request, exception or Exception())


def json_server_error(request: HttpRequest) -> HttpResponse:
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Internal server error."}, status=500)
    return server_error(request)
