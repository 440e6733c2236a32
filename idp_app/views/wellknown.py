"""``/.well-known/``: the JWKS and the OpenID discovery document, for services that verify our
tokens without holding a secret (``RBAC_ABAC_JWKS_URL``).

Both are public and carry no private material. They may be cached for :data:`MAX_AGE` seconds: a
verifier refetches the JWKS as soon as a token names a ``kid`` it does not know, and a retired key
stays published for much longer than that (``IDP_TOKEN_LIFETIME`` + ``IDP_SIGNING_KEY_LEEWAY``).
In HS256 mode (``RBAC_ABAC_JWT_SECRET``) the JWKS has no keys.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, jsonify, url_for

from .. import signing_keys

bp = Blueprint("wellknown", __name__)

#: Seconds a client or proxy may cache either document.
MAX_AGE = 60


def _cached(document: dict[str, Any]) -> Any:
    response = jsonify(document)
    response.headers["Cache-Control"] = f"public, max-age={MAX_AGE}"
    return response


@bp.get("/jwks.json")
def jwks() -> Any:
    return _cached({"keys": signing_keys.published()})


@bp.get("/openid-configuration")
def openid_configuration() -> Any:
    return _cached(
        {
            "issuer": current_app.config["RBAC_ABAC_JWT_ISSUER"],
            "jwks_uri": url_for("wellknown.jwks", _external=True),
            "token_endpoint": url_for("token.issue_token", _external=True),
            "grant_types_supported": ["password"],
            "response_types_supported": ["token"],
            "subject_types_supported": ["public"],
            "token_endpoint_auth_methods_supported": ["none"],
            "id_token_signing_alg_values_supported": signing_keys.algorithms_supported(),
            "claims_supported": ["sub", "aud", "iss", "iat", "exp"],
        }
    )
