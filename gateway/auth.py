"""Bearer tokens: HS256 JWTs signed by membership, verified here without a call.

Claims: ``sub`` (account id), ``role``, ``scope`` (union_admin: organisation code prefix), ``merchant_id``,
``employer_id``, ``iat``, ``exp``, ``iss`` = ``unionhub``.
"""
from dataclasses import dataclass

import jwt

from unionhub_kit import config
from unionhub_kit.errors import Unauthorized

ROLES = ("member", "union_admin", "merchant", "employer", "integrator")
ISSUER = "unionhub"
ALGORITHM = "HS256"


def signing_key():
    return config.secret("jwt")


@dataclass
class Principal:
    sub: str
    role: str
    scope: str = None
    merchant_id: str = None
    employer_id: str = None

    def as_actor(self):
        return {"sub": self.sub, "role": self.role, "scope": self.scope, "merchant_id": self.merchant_id,
                "employer_id": self.employer_id}


def issue(claims, ttl_seconds):
    """Used by membership (the issuer); here so signer and verifier share one definition."""
    import time
    now = int(time.time())
    payload = {k: v for k, v in claims.items() if v is not None}
    payload.update({"iss": ISSUER, "iat": now, "exp": now + int(ttl_seconds)})
    return jwt.encode(payload, signing_key(), algorithm=ALGORITHM)


def verify(token):
    try:
        claims = jwt.decode(token, signing_key(), algorithms=[ALGORITHM], issuer=ISSUER,
                            options={"require": ["exp", "iat", "sub", "role"]})
    except jwt.ExpiredSignatureError:
        raise Unauthorized("The token has expired.", code="TOKEN_EXPIRED")
    except jwt.InvalidTokenError:
        raise Unauthorized("The token is not valid.", code="INVALID_TOKEN")
    if claims.get("role") not in ROLES:
        raise Unauthorized("The token is not valid.", code="INVALID_TOKEN")
    return Principal(claims["sub"], claims["role"], claims.get("scope"), claims.get("merchant_id"),
                     claims.get("employer_id"))


def authenticate(header):
    if not header:
        raise Unauthorized("Send Authorization: Bearer <access_token>.", code="UNAUTHORIZED")
    parts = header.split(None, 1)
    if len(parts) != 2 or parts[0].lower() != "bearer" or not parts[1].strip():
        raise Unauthorized("Send Authorization: Bearer <access_token>.", code="UNAUTHORIZED")
    return verify(parts[1].strip())
