"""Which events reach notify's webhook queue (``on_any_event``): only the types some webhook subscribes to.

The queue is an on-demand subscription (``unionhub_kit.topology``): declared without bindings, bound here. Most
event types have no webhook, and routing them anyway cost a persistent copy in the broker and a delivery to notify
for every claim of a grab. ``want`` binds a new webhook's types before its registration is answered (so every
matching event published after the 201 reaches it; a replayed registration binds again); ``sync``, on a timer of
every replica (and at start), makes the bindings exactly the types of the stored webhooks: it repairs a binding
lost with a crash or a broker reset and drops the types no webhook wants any more. ``on_any_event`` still checks the
store for each event, so an event routed a moment after its last webhook was deleted is a no-op, as before.
"""
from kombu import Connection

from unionhub_kit import topology

from . import store

SUBSCRIPTION = topology.find("notify", "on_any_event")


def pairs(types):
    """``service.event`` names -> ``(service, event)`` pairs."""
    return {tuple(t.split(".", 1)) for t in types if "." in t}


def want(amqp_uri, types):
    """Route ``types`` to the webhook queue now (bindings are only added here)."""
    with Connection(amqp_uri, connect_timeout=5) as conn:
        return topology.bind_on_demand(conn, SUBSCRIPTION, pairs(types), unbind=False)


def sync(amqp_uri, db):
    """Make the webhook queue's bindings exactly the event types of the stored webhooks; return them."""
    types = store.webhook_event_types(db)
    with Connection(amqp_uri, connect_timeout=5) as conn:
        topology.bind_on_demand(conn, SUBSCRIPTION, pairs(types), unbind=True)
    return types
