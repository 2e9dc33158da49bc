"""Authentication at the gateway: a bearer JWT (see ``unionhub_kit.tokens``), verified without a call."""
from dataclasses import dataclass

from unionhub_kit import tokens
from unionhub_kit.errors import Unauthorized


@dataclass
class Principal:
    sub: str
    role: str
    scope: str = None
    merchant_id: str = None
    employer_id: str = None
    sid: str = None  # the login (logout ends it)
    iat: int = None

    def as_actor(self):
        """What services are told about the caller (never the token itself)."""
        return {"sub": self.sub, "role": self.role, "scope": self.scope, "merchant_id": self.merchant_id,
                "employer_id": self.employer_id, "sid": self.sid}


def authenticate(header):
    if not header:
        raise Unauthorized("Send Authorization: Bearer <access_token>.", code="UNAUTHORIZED")
    parts = header.split(None, 1)
    if len(parts) != 2 or parts[0].lower() != "bearer" or not parts[1].strip():
        raise Unauthorized("Send Authorization: Bearer <access_token>.", code="UNAUTHORIZED")
    c = tokens.verify(parts[1].strip())
    return Principal(c["sub"], c["role"], c.get("scope"), c.get("merchant_id"), c.get("employer_id"), c.get("sid"),
                     c.get("iat"))
