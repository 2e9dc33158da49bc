"""Access tokens: HS256 JWTs signed by membership (the issuer) and verified by the gateway without a call.

Claims: ``sub`` (account id; for members the user id that events call ``user_id``), ``role``, ``scope``
(union_admin: organisation code prefix such as ``51`` / ``5101`` / ``510104``), ``merchant_id``, ``employer_id``,
``sid`` (the login: logout and a spent refresh token end it), ``iat``, ``exp``, ``iss`` = ``unionhub``. The header's
``kid`` names the root secret whose signing key signed it (``unionhub_kit.keys``: rotation without logging anyone out).
"""
import time

import jwt

from . import keys
from .errors import Unauthorized

ROLES = ("member", "union_admin", "merchant", "employer", "integrator")
ISSUER = "unionhub"
ALGORITHM = "HS256"
DEFAULT_TTL = 15 * 60  # access tokens live at most 15 minutes; a refresh token continues the login


PURPOSE = "token-signing"
VERIFIED_MAX = 50000  # tokens whose signature this process has checked (about 0.8 KB each)
_verified = {}  # token -> claims: a token's signature is checked once per process; its expiry at every use
_verified_roots = [None]  # the root secrets the cached checks were made with (a rotation empties the cache)


def issue(sub, role, scope=None, merchant_id=None, employer_id=None, ttl_seconds=DEFAULT_TTL, sid=None):
    """A signed access token; ``sid`` names the login (the session a refresh token continues, logout ends)."""
    now = int(time.time())
    payload = {"sub": sub, "role": role, "scope": scope, "merchant_id": merchant_id, "employer_id": employer_id,
               "sid": sid}
    payload = {k: v for k, v in payload.items() if v is not None}
    payload.update({"iss": ISSUER, "iat": now, "exp": now + int(ttl_seconds)})
    kid, key = keys.current(PURPOSE)
    return jwt.encode(payload, key, algorithm=ALGORITHM, headers={"kid": kid})


def _key_for(token):
    """The signing key the token's ``kid`` names (current or previous root), or None."""
    try:
        kid = jwt.get_unverified_header(token).get("kid")
    except jwt.InvalidTokenError:
        return None
    return keys.by_kid(PURPOSE, kid) if isinstance(kid, str) else None


def verify(token):
    """Return the claims or raise ``Unauthorized`` (``TOKEN_EXPIRED`` / ``INVALID_TOKEN``).

    The signature of a token is checked once per process (HS256 through PyJWT costs ~90 us, most of it in pure
    Python base64 checks, on every request of a member's session); later uses of the same token string only check
    its expiry. The cache is keyed by the whole token (header, claims and signature), so nothing can be slipped in,
    is emptied when the root secrets change (a finished rotation drops the old root's tokens at once) and holds at
    most ``VERIFIED_MAX`` tokens. Revocation is not this function's business (the gateway checks it per request)."""
    roots = keys.all_roots()
    if roots != _verified_roots[0]:
        _verified.clear()
        _verified_roots[0] = roots
    claims = _verified.get(token)
    if claims is not None:
        if claims["exp"] <= time.time():
            _verified.pop(token, None)
            raise Unauthorized("The token has expired.", code="TOKEN_EXPIRED")
        return dict(claims)
    claims = _verify(token)
    if len(_verified) >= VERIFIED_MAX:
        _verified.clear()
    _verified[token] = claims
    return dict(claims)


def _verify(token):
    key = _key_for(token)
    if key is None:
        raise Unauthorized("The token is not valid.", code="INVALID_TOKEN")
    try:
        claims = jwt.decode(token, key, algorithms=[ALGORITHM], issuer=ISSUER,
                            options={"require": ["exp", "iat", "sub", "role"]})
    except jwt.ExpiredSignatureError:
        raise Unauthorized("The token has expired.", code="TOKEN_EXPIRED")
    except jwt.InvalidTokenError:
        raise Unauthorized("The token is not valid.", code="INVALID_TOKEN")
    if claims.get("role") not in ROLES:
        raise Unauthorized("The token is not valid.", code="INVALID_TOKEN")
    return claims
