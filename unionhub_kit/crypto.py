"""Personal data at rest: a keyed hash for uniqueness and an encrypted copy when it must be recoverable."""
import base64
import hashlib
import hmac

from cryptography.fernet import Fernet

from . import config


def keyed_hash(value, purpose="pii"):
    """HMAC-SHA256 of ``value`` under a secret key: stable for unique indexes, useless without the key."""
    return hmac.new(config.secret(purpose + "-hash"), value.encode(), hashlib.sha256).hexdigest()


def _fernet(purpose):
    return Fernet(base64.urlsafe_b64encode(hashlib.sha256(config.secret(purpose + "-enc")).digest()))


def encrypt(value, purpose="pii"):
    return _fernet(purpose).encrypt(value.encode()).decode()


def decrypt(token, purpose="pii"):
    return _fernet(purpose).decrypt(token.encode()).decode()


def seal(value):
    """Encrypt a value that travels inside an internal event (for example a phone for notify's projection)."""
    return encrypt(value, "event-seal")


def unseal(token):
    return decrypt(token, "event-seal")


def sign(body, key):
    """``sha256=<hex HMAC>`` of ``body`` (bytes) as sent in ``X-UnionHub-Signature``."""
    if isinstance(key, str):
        key = key.encode()
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()
