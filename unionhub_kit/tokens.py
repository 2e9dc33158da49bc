"""Access tokens: HS256 JWTs signed by membership (the issuer) and verified by the gateway without a call.

Claims: ``sub`` (account id; for members the user id that events call ``user_id``), ``role``, ``scope``
(union_admin: organisation code prefix such as ``51`` / ``5101`` / ``510104``), ``merchant_id``, ``employer_id``,
``iat``, ``exp``, ``iss`` = ``unionhub``.
"""
import time

import jwt

from . import config
from .errors import Unauthorized

ROLES = ("member", "union_admin", "merchant", "employer", "integrator")
ISSUER = "unionhub"
ALGORITHM = "HS256"
DEFAULT_TTL = 2 * 3600


def signing_key():
    return config.secret("jwt")


def issue(sub, role, scope=None, merchant_id=None, employer_id=None, ttl_seconds=DEFAULT_TTL):
    now = int(time.time())
    payload = {"sub": sub, "role": role, "scope": scope, "merchant_id": merchant_id, "employer_id": employer_id}
    payload = {k: v for k, v in payload.items() if v is not None}
    payload.update({"iss": ISSUER, "iat": now, "exp": now + int(ttl_seconds)})
    return jwt.encode(payload, signing_key(), algorithm=ALGORITHM)


def verify(token):
    """Return the claims or raise ``Unauthorized`` (``TOKEN_EXPIRED`` / ``INVALID_TOKEN``)."""
    try:
        claims = jwt.decode(token, signing_key(), algorithms=[ALGORITHM], issuer=ISSUER,
                            options={"require": ["exp", "iat", "sub", "role"]})
    except jwt.ExpiredSignatureError:
        raise Unauthorized("The token has expired.", code="TOKEN_EXPIRED")
    except jwt.InvalidTokenError:
        raise Unauthorized("The token is not valid.", code="INVALID_TOKEN")
    if claims.get("role") not in ROLES:
        raise Unauthorized("The token is not valid.", code="INVALID_TOKEN")
    return claims
