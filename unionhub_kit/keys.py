"""Secrets: the environment a process runs in, and the keys it derives from ``UNIONHUB_SECRET``.

* ``UNIONHUB_ENV`` is ``development`` (what ``make run`` and the tests set) or ``production`` (the default for any
  other start). ``check_environment`` refuses a production start, with a one-line reason, unless ``UNIONHUB_SECRET``
  is at least 32 characters and not the development value published below. Every service process (the gateway too)
  calls it when its container is made.
* One root secret, a separate key derived for each purpose (``derive``): token signing, encryption of personal data
  at rest (one key per kind of data), webhook secrets at rest, and the keyed hashes the store looks things up by.
  A derived key is ``HMAC-SHA256(root, "unionhub/v1/<purpose>")``: knowing one purpose's key tells nothing of another
  or of the root.
* Key ids: a root's id (``kid``) is the first 8 hex digits of ``HMAC(root, "unionhub/kid")``. Tokens carry it in their
  header and ciphertexts in a ``<kid>:`` prefix. To rotate, set ``UNIONHUB_SECRET`` to the new root and list the
  old one(s) in ``UNIONHUB_SECRET_PREVIOUS`` (comma-separated): new tokens and new data use the new root, and tokens
  and data made under a previous root still verify and decrypt, so nobody is logged out and nothing is lost.
  Drop the previous root once the data under it is re-encrypted (or its tokens have expired, for signing alone).
* Lookup hashes (phone, ID number: the unique indexes) cannot follow a rotation without re-hashing every record, so
  they derive from ``UNIONHUB_LOOKUP_SECRET`` when it is set (pin it to the old root when rotating), else from
  ``UNIONHUB_SECRET``. See SECURITY.md.
"""
import hashlib
import hmac

from . import config

DEVELOPMENT = "development"
PRODUCTION = "production"
ENVIRONMENTS = (DEVELOPMENT, PRODUCTION)
DEV_SECRET = "dev-only-secret-change-me-in-production-0123456789"  # published: development only
MIN_SECRET_LENGTH = 32


def environment():
    """``UNIONHUB_ENV``: production unless the start says development (``make run``, the tests)."""
    return (config.get("UNIONHUB_ENV") or PRODUCTION).strip().lower()


def is_development():
    return environment() == DEVELOPMENT


def problem():
    """Why this process must not start (one line), or None."""
    env = environment()
    if env not in ENVIRONMENTS:
        return "UNIONHUB_ENV=%r: use development or production" % env
    if env == DEVELOPMENT:
        return None
    secret = config.get("UNIONHUB_SECRET") or ""
    if not secret:
        return "UNIONHUB_SECRET is not set (production needs a secret of at least %d characters)" % MIN_SECRET_LENGTH
    if secret == DEV_SECRET:
        return "UNIONHUB_SECRET is the published development value; set a secret of your own"
    if secret.upper().startswith("CHANGE-ME"):
        return "UNIONHUB_SECRET is still the manifests' placeholder; set a secret of your own"
    if len(secret) < MIN_SECRET_LENGTH:
        return "UNIONHUB_SECRET has %d characters; production needs at least %d" % (len(secret), MIN_SECRET_LENGTH)
    for old in previous_roots():
        if old == DEV_SECRET:
            return "UNIONHUB_SECRET_PREVIOUS lists the published development value"
    return None


def check_environment(what="this process"):
    """Exit with a one-line reason when the environment may not start (called as each service container is made)."""
    why = problem()
    if why:
        raise SystemExit("unionhub: %s refuses to start in %s: %s" % (what, environment(), why))


def root():
    """The current root secret (the published development value only in development)."""
    secret = config.get("UNIONHUB_SECRET")
    if secret:
        return secret
    if is_development():
        return DEV_SECRET
    check_environment()  # a production process without a secret never derives a key from the published value
    raise SystemExit("unionhub: UNIONHUB_SECRET is not set")


def previous_roots():
    return [s.strip() for s in config.get("UNIONHUB_SECRET_PREVIOUS").split(",") if s.strip()]


def kid_of(secret):
    return hmac.new(secret.encode(), b"unionhub/kid", hashlib.sha256).hexdigest()[:8]


def derive(secret, purpose):
    return hmac.new(secret.encode(), b"unionhub/v1/" + purpose.encode(), hashlib.sha256).digest()


def current(purpose):
    """``(kid, key)`` to sign or encrypt with now."""
    secret = root()
    return kid_of(secret), derive(secret, purpose)


def by_kid(purpose, kid):
    """The ``purpose`` key of the root (current or previous) whose id is ``kid``; None if no such root."""
    for secret in [root()] + previous_roots():
        if hmac.compare_digest(kid_of(secret), str(kid)):
            return derive(secret, purpose)
    return None


def all_roots():
    return [root()] + previous_roots()


def lookup_key(purpose):
    """The key of a keyed hash the store looks records up by (kept stable across rotations; see above)."""
    base = config.get("UNIONHUB_LOOKUP_SECRET") or root()
    return hashlib.sha256(base.encode() + b"|" + purpose.encode() + b"-hash").digest()
