"""Personal data at rest: a keyed hash for uniqueness and an encrypted copy when it must be recoverable."""
import base64
import hashlib
import hmac
import time

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from . import keys


def keyed_hash(value, purpose="pii"):
    """HMAC-SHA256 of ``value`` under a secret key: stable for unique indexes, useless without the key."""
    return hmac.new(keys.lookup_key(purpose), value.encode(), hashlib.sha256).hexdigest()


def _fernet(key):
    return Fernet(base64.urlsafe_b64encode(key))


def _legacy_fernet(secret, purpose):
    """What data was encrypted with before key ids (a ciphertext without a ``<kid>:`` prefix)."""
    key = hashlib.sha256(secret.encode() + b"|" + (purpose + "-enc").encode()).digest()
    return Fernet(base64.urlsafe_b64encode(hashlib.sha256(key).digest()))


def encrypt(value, purpose="pii"):
    """``<kid>:<Fernet token>`` under the current root's key for ``purpose`` (each purpose its own key)."""
    kid, key = keys.current("enc/" + purpose)
    return "%s:%s" % (kid, _fernet(key).encrypt(value.encode()).decode())


def decrypt(token, purpose="pii"):
    """Decrypt under the key its id names (the current root or a previous one still listed); raises
    ``cryptography.fernet.InvalidToken`` when no known key opens it."""
    kid, sep, body = token.partition(":")
    if sep and len(kid) == 8:
        key = keys.by_kid("enc/" + purpose, kid)
        if key is None:
            raise InvalidToken("no key with id %s (was its root dropped from UNIONHUB_SECRET_PREVIOUS?)" % kid)
        return _fernet(key).decrypt(body.encode()).decode()
    return MultiFernet([_legacy_fernet(s, purpose) for s in keys.all_roots()]).decrypt(token.encode()).decode()


SIGNATURE_TOLERANCE_SECONDS = 300  # receivers reject a delivery whose timestamp is older (or further ahead)


def sign(body, key, timestamp):
    """``sha256=<hex HMAC-SHA256 of "<timestamp>." + body>`` (``body`` bytes) as sent in ``X-UnionHub-Signature``:
    the timestamp is signed with the body, so a captured delivery cannot be replayed later with a fresh one."""
    if isinstance(key, str):
        key = key.encode()
    return "sha256=" + hmac.new(key, b"%d." % int(timestamp) + body, hashlib.sha256).hexdigest()


def signed_headers(body, key, delivery_id, now=None):
    """The headers of one signed delivery attempt (Signed deliveries in API.md): a fresh timestamp each attempt,
    the same ``X-UnionHub-Delivery`` across the retries of one delivery, so a receiver can drop a repeat."""
    ts = int(time.time() if now is None else now)
    return {"X-UnionHub-Timestamp": str(ts), "X-UnionHub-Signature": sign(body, key, ts),
            "X-UnionHub-Delivery": str(delivery_id)}


def verify_signed(body, headers, key, now=None, tolerance=SIGNATURE_TOLERANCE_SECONDS):
    """What a receiver does: the signature matches "<timestamp>." + body and the timestamp is recent."""
    try:
        ts = int(headers.get("X-UnionHub-Timestamp", ""))
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - ts) > tolerance:
        return False
    return hmac.compare_digest(sign(body, key, ts), headers.get("X-UnionHub-Signature") or "")
