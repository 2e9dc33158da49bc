"""The caller checks every service makes on its RPC ``actor`` (``gateway.auth.Principal.as_actor()``), one way.

Services check the role again although the gateway already did: an RPC caller is not always the gateway. An actor
acts for somebody (``sub``) in one ``role``; a union_admin has a ``scope`` (an organisation or region code prefix),
an employer account an ``employer_id``.
"""
from . import regions
from .errors import Forbidden


def _refuse_unless(actor, roles):
    if not actor or actor.get("role") not in roles:
        raise Forbidden("This is for %s." % " or ".join(roles), code="FORBIDDEN")


def require_role(actor, *roles):
    """An actor in one of ``roles`` acting for somebody (``sub``); returns it."""
    _refuse_unless(actor, roles)
    if not actor.get("sub"):
        raise Forbidden("This is for %s." % " or ".join(roles), code="FORBIDDEN")
    return actor


def scope_of(actor):
    """A union_admin's scope as a prefix (``51``, ``5101``, ``510104`` or a grassroots code; ``510100`` -> ``5101``)."""
    _refuse_unless(actor, ("union_admin",))
    scope = actor.get("scope")
    if not scope:
        raise Forbidden("This account has no scope.", code="OUT_OF_SCOPE")
    return regions.normalize_prefix(scope)


def require_in_scope(code, scope, what="region"):
    """``code`` lies inside the prefix ``scope`` (from ``scope_of``)."""
    if not regions.in_scope(code, scope):
        raise Forbidden("The %s %s is outside your scope (%s)." % (what, code, scope), code="OUT_OF_SCOPE")


def require_scope(actor, code, what="organisation"):
    """A union_admin whose scope holds ``code`` (an organisation or region code)."""
    require_in_scope(code, scope_of(actor), what)


def require_employer(actor):
    """The employer id of an employer token (a token without one acts for nobody)."""
    employer_id = (actor or {}).get("employer_id")
    if not employer_id:
        raise Forbidden("This account does not act for an employer.", code="NOT_AN_EMPLOYER")
    return employer_id
