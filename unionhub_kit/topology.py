"""Broker topology: event exchanges, every consumer queue with its retry and dead-letter queues.

``SUBSCRIPTIONS`` is the one place that says who listens to what. A reliable handler refuses to start unless its
subscription is listed here, and every publisher declares all queues bound to its exchange before it publishes
anything, so no event is dropped for lack of a queue (nameko's default would silently drop it).

For each subscription queue ``Q``:
  ``Q``        durable, bound to ``<source>.events`` with the event name as routing key;
  ``Q.retry``  durable, messages wait there for their backoff (per-message TTL), then dead-letter back to ``Q``;
  ``Q.dlq``    durable, where a message is parked after its last attempt (ops list and replay it).

Not listed here, because nothing of it must survive its process: each gateway process's own queue of benefits' stock
events (``gateway.cache_events``: ``unionhub.gateway-cache.*``, exclusive, auto-deleted, not acknowledged; a lost
event leaves a cached campaign answer as it was for at most its second).
"""
from collections import namedtuple

from kombu import Exchange, Queue

from . import catalog

Subscription = namedtuple("Subscription", "consumer method bindings on_demand", defaults=(False,))
# on_demand: the queue is declared without bindings and bound at run time to the event types someone wants
# (``bind_on_demand``): the broker then routes nothing nobody asked for (webhooks: most event types have no
# subscriber, and a copy of every claim's event for no one cost a persistent message and a delivery)

ALL = "*"  # every event type of every service (webhook fan-out)

SUBSCRIPTIONS = [
    # benefits: member projection for eligibility; welcome coupons
    Subscription("benefits", "on_member_joined", [("membership", "member_joined")]),
    Subscription("benefits", "on_member_transferred", [("membership", "member_transferred")]),
    Subscription("benefits", "on_member_left", [("membership", "member_left")]),
    # notify: member projection, inbox entries, alerts
    Subscription("notify", "on_member_joined", [("membership", "member_joined")]),
    Subscription("notify", "on_member_rejected", [("membership", "member_rejected")]),
    Subscription("notify", "on_member_transferred", [("membership", "member_transferred")]),
    Subscription("notify", "on_member_left", [("membership", "member_left")]),
    Subscription("notify", "on_coupon_claimed", [("benefits", "coupon_claimed")]),
    Subscription("notify", "on_coupon_redeemed", [("benefits", "coupon_redeemed")]),
    Subscription("notify", "on_application_status_changed", [("jobs", "application_status_changed")]),
    Subscription("notify", "on_job_alert_matched", [("jobs", "job_alert_matched")]),
    # jobs: match job alerts of its own postings asynchronously
    Subscription("jobs", "on_job_posted", [("jobs", "job_posted")]),
    # jobs: the masked phone employers see of an applicant; erasure of a member who left
    Subscription("jobs", "on_member_joined", [("membership", "member_joined")]),
    Subscription("jobs", "on_member_left", [("membership", "member_left")]),
    # stations: visit counters from its own check-ins
    Subscription("stations", "on_station_visited", [("stations", "station_visited")]),
    # notify: integrator webhooks receive every event type
    Subscription("notify", "on_any_event", [ALL], on_demand=True),
]

RETRY_SUFFIX = ".retry"
DLQ_SUFFIX = ".dlq"


def exchange_name(service):
    return "%s.events" % service


def event_exchange(service):
    return Exchange(exchange_name(service), type="topic", durable=True, auto_delete=False)


def expand(bindings):
    out = []
    for b in bindings:
        if b == ALL:
            out.extend(sorted(catalog.EVENTS))
        else:
            out.append(tuple(b))
    return out


def queue_name(sub):
    binds = expand(sub.bindings)
    if len(sub.bindings) == 1 and sub.bindings[0] != ALL:
        source, event = binds[0]
        return "evt-%s-%s--%s.%s" % (source, event, sub.consumer, sub.method)
    return "evt-multi--%s.%s" % (sub.consumer, sub.method)


def find(consumer, method):
    for sub in SUBSCRIPTIONS:
        if sub.consumer == consumer and sub.method == method:
            return sub
    return None


def queues_for(sub):
    """The three kombu queues of a subscription (main, retry, dead-letter)."""
    name = queue_name(sub)
    bindings = []
    from kombu import binding
    for source, event in ([] if sub.on_demand else expand(sub.bindings)):
        bindings.append(binding(event_exchange(source), routing_key=event))
    main = Queue(name, bindings=bindings, durable=True, auto_delete=False)
    retry = Queue(name + RETRY_SUFFIX, durable=True, auto_delete=False, queue_arguments={
        "x-dead-letter-exchange": "", "x-dead-letter-routing-key": name})
    dlq = Queue(name + DLQ_SUFFIX, durable=True, auto_delete=False)
    return main, retry, dlq


def declare(connection, services=None):
    """Declare exchanges and every queue bound to them (all, or those bound to ``services``' exchanges)."""
    channel = connection.channel()
    try:
        for svc in (services or catalog.services()):
            event_exchange(svc)(channel).declare()
        subs = SUBSCRIPTIONS if services is None else [
            s for s in SUBSCRIPTIONS if any(src in services for src, _ in expand(s.bindings))]
        for sub in subs:
            for src, _ in expand(sub.bindings):
                event_exchange(src)(channel).declare()
            for q in queues_for(sub):
                q(channel).declare()
    finally:
        channel.close()


def bind_on_demand(connection, sub, wanted, unbind=True):
    """Bind the queue of an ``on_demand`` subscription to each ``(source, event)`` of ``wanted`` among its possible
    bindings; with ``unbind``, also remove the bindings of the others (binding and unbinding are idempotent in the
    broker). Returns the pairs bound."""
    name = queue_name(sub)
    channel = connection.channel()
    bound = []
    try:
        for source, event in expand(sub.bindings):
            if (source, event) in wanted:
                event_exchange(source)(channel).declare()
                channel.queue_bind(name, exchange_name(source), routing_key=event)
                bound.append((source, event))
            elif unbind:
                channel.queue_unbind(name, exchange_name(source), routing_key=event)
    finally:
        channel.close()
    return bound


def declare_uri(amqp_uri, services=None):
    from kombu import Connection
    with Connection(amqp_uri) as conn:
        conn.ensure_connection(max_retries=3)
        declare(conn, services)


def all_queue_names():
    names = []
    for sub in SUBSCRIPTIONS:
        names.extend(q.name for q in queues_for(sub))
    return names
