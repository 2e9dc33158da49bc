"""Every route of the gateway, one module per domain (the same sections as API.md)."""
from . import ops, identity, membership, benefits, jobs, notify, stations  # noqa: F401
