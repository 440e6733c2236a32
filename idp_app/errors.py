"""JSON errors: every failure leaves as ``{"success": false, "error": "..."}``.

This is the edge where failures become HTTP: :class:`ApiError` for what the views and request
parsing refuse (bad input, bad credentials at the API), and one handler that maps the domain's
:class:`.OperationError` subclasses to their status and code (:data:`OPERATION_ERRORS`).
"""

from __future__ import annotations

import json
import logging

from flask import Flask, Response
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as BaseResponse

from .domain_errors import (
    AlreadyExists,
    InvalidCredentials,
    InvalidCursor,
    OperationError,
    RedisUnavailable,
    ServiceNotRegistered,
    SigningKeyFromConfiguration,
    TokenIssuingNotConfigured,
    TokenNotFound,
    UnknownRoles,
    UserNotFound,
)

logger = logging.getLogger("idp_app")


class ApiError(Exception):
    """Raised by views and request parsing; becomes a JSON error with ``status``."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


def error_response(status: int, message: str, code: str | None = None) -> Response:
    body: dict[str, object] = {"success": False, "error": message}
    if code is not None:
        body["code"] = code  # machine-readable, for callers that must tell 404s apart
    return Response(json.dumps(body), status=status, mimetype="application/json")


def _api_error(exc: ApiError) -> Response:
    return error_response(exc.status, exc.message, exc.code)


#: How each operation error leaves the API: ``(status, machine-readable code or None)``. The
#: codes are part of the API (the library tells "unknown user" from other 404s by them).
OPERATION_ERRORS: dict[type[OperationError], tuple[int, str | None]] = {
    UserNotFound: (404, "user_not_found"),
    ServiceNotRegistered: (404, "service_not_registered"),
    AlreadyExists: (409, None),
    UnknownRoles: (400, None),
    InvalidCredentials: (401, None),
    InvalidCursor: (400, None),
    TokenNotFound: (404, "token_not_found"),
    TokenIssuingNotConfigured: (503, None),
    SigningKeyFromConfiguration: (409, None),
    RedisUnavailable: (503, None),
}


def _operation_error(exc: OperationError) -> Response:
    for kind, (status, code) in OPERATION_ERRORS.items():
        if isinstance(exc, kind):
            return error_response(status, str(exc), code)
    return _unexpected(exc)  # an error without an answer is a bug: a logged 500


_MESSAGES = {
    400: "bad request",
    401: "missing or invalid bearer token",
    403: "forbidden",
    404: "not found",
    405: "method not allowed",
    409: "conflict",
    413: "request body too large",
    500: "internal server error",
    503: "service unavailable",
}


def _http_error(exc: HTTPException) -> BaseResponse:
    status = exc.code or 500
    response = exc.get_response()  # keeps headers such as Allow on 405
    response.set_data(
        json.dumps({"success": False, "error": _MESSAGES.get(status, exc.name.lower())})
    )
    response.mimetype = "application/json"
    return response


def _unexpected(exc: Exception) -> Response:
    logger.exception("unhandled error")
    return error_response(500, _MESSAGES[500])


def register(app: Flask) -> None:
    app.register_error_handler(ApiError, _api_error)
    app.register_error_handler(OperationError, _operation_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)
