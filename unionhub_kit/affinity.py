"""RPC affinity: the calls of a service method that carry the same key reach the same replica of that service.

Why: benefits merges the claim batches of one campaign it receives into its own group commit, and writes each merged
batch in one store transaction. On nameko's one shared queue per service (``rpc-benefits``) two replicas take turns,
so each merges half as much, the store runs twice as many smaller transactions, and a second replica cost throughput
(``bench.flash_grab``: 0.81x of one). With affinity every ``claim_many`` of one campaign goes to one replica, and
different campaigns spread over the replicas.

How (RabbitMQ's ``rabbitmq_consistent_hash_exchange`` plugin, enabled beside the management plugin by
``deploy/stack.py``, ``deploy/ensure_broker.py`` and compose's ``deploy/rabbitmq/enabled_plugins``):

* an exchange per service, ``unionhub.affinity.<service>``, of type ``x-consistent-hash``, hashing the message
  header ``x-affinity-key`` (not the routing key), whose **alternate exchange** is nameko's RPC exchange
  (``nameko-rpc``). A request it cannot route (no replica bound a queue to it) goes on to ``nameko-rpc`` with its
  routing key (``benefits.claim_many``) and lands on the shared queue: the caller needs no fallback of its own;
* each replica serving with ``@affinity_rpc`` (``unionhub_kit.rpc``) binds a queue of its own,
  ``rpc-<service>-affinity-<token>`` (exclusive, auto-deleted, not durable), with weight 1; the request keeps its
  routing key, so the replica dispatches it to the method as it would from the shared queue;
* a caller asks for it per call (``with_affinity(proxy, key).method(...)``) and then publishes to that exchange
  with the header set.

Failure behaviour: a replica that dies takes its exclusive queue, and the requests taken from it and not yet
answered, with it: those callers get the RPC timeout's 504 (to be retried with the same Idempotency-Key), as when a
replica dies mid-call on the shared queue. When a replica stops or starts the consistent hash moves the keys that
hashed to it (the plugin's jump hash over one bucket per replica: a replica that starts takes about 1/N of the keys
from the others; when one that is not the last bound stops, the plugin renumbers the later buckets, so some keys of
other replicas move too). Nothing relies on a key staying put: the store's guarded writes keep claims exact whichever
replica decides them, affinity only makes the batches bigger. Without the plugin (the declare is refused) or with
``RPC_AFFINITY`` off, callers publish to ``nameko-rpc`` and replicas serve from the shared queue only, as before.
A broker that loses the plugin while replicas are bound refuses their queue's redeclare when they reconnect: restart
them (they then serve from the shared queue) or set ``RPC_AFFINITY=false``.
"""
import logging
import time

import eventlet
import eventlet.semaphore
import kombu

log = logging.getLogger("unionhub.rpc")

HEADER = "x-affinity-key"  # the header the exchange hashes
EXCHANGE_TYPE = "x-consistent-hash"
WEIGHT = "1"  # the binding key of a replica's queue: its share of the hash space (all replicas alike)
DECLARE_SECONDS = 5.0  # a declare on a connection of its own, at most this long
RETRY_SECONDS = 60.0  # a caller whose declare failed publishes to the ordinary exchange this long, then tries again


def exchange_name(service):
    """``unionhub.affinity.<service>`` (under the ``unionhub.`` names every service account may configure)."""
    return "unionhub.affinity.%s" % service


def queue_name(service, token):
    """A replica's own affinity queue, under ``rpc-`` (the broker accounts' RPC names and the RPC message-TTL
    policy of ``deploy/rabbitmq/definitions.json``)."""
    return "rpc-%s-affinity-%s" % (service, token)


def exchange_arguments(rpc_exchange):
    """The exchange's arguments: callers and replicas both declare it, and the broker refuses a second declare
    with other arguments, so they come from here only."""
    return {"hash-header": HEADER, "alternate-exchange": rpc_exchange}


def exchange(service, rpc_exchange):
    return kombu.Exchange(exchange_name(service), type=EXCHANGE_TYPE, durable=True, auto_delete=False,
                          arguments=exchange_arguments(rpc_exchange))


def route(service, rpc_exchange, key, available):
    """Where a call is published: ``(exchange name, headers to add)``. With a key and the affinity exchange
    declared, that exchange and the header it hashes (the key as text); otherwise nameko's RPC exchange, as any
    call."""
    if key is None or not available:
        return rpc_exchange, {}
    return exchange_name(service), {HEADER: str(key)}


_warned = set()


def declare(amqp_uri, ex, who):
    """Declare ``ex`` on a short-lived connection of its own; False (a warning logged once per broker, exchange and
    side) when the broker refuses or does not answer. Its own connection because a broker without the plugin answers
    the declare by closing the connection (``COMMAND_INVALID - unknown exchange type``): a held publishing or
    consuming connection must never see that."""
    try:
        with eventlet.Timeout(DECLARE_SECONDS):
            with kombu.Connection(amqp_uri, connect_timeout=DECLARE_SECONDS, heartbeat=0) as conn:
                ex.bind(conn.channel()).declare()
        return True
    except (Exception, eventlet.Timeout) as exc:
        level = logging.DEBUG if (amqp_uri, ex.name, who) in _warned else logging.WARNING
        _warned.add((amqp_uri, ex.name, who))
        log.log(level, "RPC affinity off for %s (%s): the exchange %s could not be declared (%s: %s); is the "
                "rabbitmq_consistent_hash_exchange plugin enabled?", who, ex.name, ex.name, type(exc).__name__, exc)
        return False


_declared = {}  # (amqp uri, exchange name) -> (checked at, declared)
_declaring = eventlet.semaphore.Semaphore()


def available(amqp_uri, ex):
    """Caller side: whether ``ex`` is declared, declaring it once per process (a failure is tried again after
    ``RETRY_SECONDS``). Calls made while another green thread declares go the ordinary way instead of waiting."""
    key = (amqp_uri, ex.name)
    hit = _declared.get(key)
    if hit is not None and (hit[1] or time.monotonic() - hit[0] < RETRY_SECONDS):
        return hit[1]
    if not _declaring.acquire(blocking=False):
        return False
    try:
        ok = declare(amqp_uri, ex, "callers")
        _declared[key] = (time.monotonic(), ok)
        return ok
    finally:
        _declaring.release()


def with_affinity(proxy, key):
    """``with_affinity(self.benefits, campaign_id).claim_many(...)``: the proxy's calls carry ``key`` (the same key,
    the same replica). A proxy that cannot (a test's fake, nameko's own proxy) is returned as it is: its calls go to
    the shared queue. Looked up on the type: a service proxy answers any attribute name with a method proxy."""
    keyed = getattr(type(proxy), "with_affinity", None)
    return keyed(proxy, key) if keyed is not None else proxy
