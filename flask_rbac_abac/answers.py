"""The 401, 403 and 503 answers, as Werkzeug HTTP exceptions an app can customise.

Each refusal is raised as a subclass of Werkzeug's :class:`~werkzeug.exceptions.Unauthorized`,
:class:`~werkzeug.exceptions.Forbidden` or :class:`~werkzeug.exceptions.ServiceUnavailable`, so
``@app.errorhandler(403)`` (or a blueprint's) receives it and may answer its own way, reading
``e.reason`` (the machine-readable code, e.g. ``missing_role``) and ``e.error`` (the sentence).
Without a handler the exception *is* the documented answer:
``{"success": false, "error": ..., "reason": ...}`` with the status, and ``WWW-Authenticate``
on a 401.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Response, current_app, has_app_context
from werkzeug.exceptions import Forbidden, HTTPException, ServiceUnavailable, Unauthorized
from werkzeug.sansio.response import Response as SansIOResponse


class _Refusal(HTTPException):
    """The shared part: a reason code, a sentence, extra headers and the JSON answer.

    ``response`` holds the documented JSON answer, built when the exception is: a catch-all
    ``@app.errorhandler(HTTPException)`` that returns ``e.response`` when it is set keeps it.
    """

    def __init__(self, error: str, reason: str, headers: dict[str, str] | None = None) -> None:
        #: The sentence of the JSON body (also Werkzeug's ``description``).
        self.error = error
        #: The machine-readable reason code (``no_identity``, ``missing_role``, ...).
        self.reason = reason
        #: Headers of the answer (``WWW-Authenticate`` on a 401).
        self.extra_headers: dict[str, str] = dict(headers or {})
        super().__init__(description=error, response=self._json_response())

    def body(self) -> dict[str, Any]:
        """The documented JSON body of this answer."""
        return {"success": False, "error": self.error, "reason": self.reason}

    def _json_response(self) -> SansIOResponse:
        response: SansIOResponse
        if has_app_context():
            response = current_app.json.response(self.body())
        else:  # raised outside a request (a test calling the library directly)
            response = Response(json.dumps(self.body()), mimetype="application/json")
        response.status_code = self.code or 500  # set by each Werkzeug base class
        response.headers.update(self.extra_headers)
        return response


class NotAuthenticated(_Refusal, Unauthorized):
    """401: no identity, or one that is not a user id (``no_identity``, ``invalid_identity``).

    Carries ``WWW-Authenticate`` in ``extra_headers`` (an error handler should keep it).
    """


class NotAuthorized(_Refusal, Forbidden):
    """403: a rule denied, the user is unknown to the IdP, or the route guard refused."""


class AuthorizationUnavailable(_Refusal, ServiceUnavailable):
    """503: the identity cannot be verified or the attributes cannot be obtained now."""


_BY_STATUS: dict[int, type[_Refusal]] = {
    401: NotAuthenticated,
    403: NotAuthorized,
    503: AuthorizationUnavailable,
}


def refuse(status: int, error: str, reason: str, **headers: str) -> _Refusal:
    """The exception for ``status`` (401, 403 or 503), to be raised by the caller."""
    return _BY_STATUS[status](error, reason, headers)
