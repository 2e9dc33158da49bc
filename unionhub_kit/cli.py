"""The operations CLI: ``python -m unionhub_kit <command>``.

    queues                                 depth and consumers of every topology queue and RPC queue
    dlq list [--queue Q] [--peek N]        dead-letter queues: depth, and the parked messages with their errors
    dlq replay Q [--count N]               move parked messages back to Q (attempts reset), oldest first
    dlq discard Q [--count N] [--yes]      delete the oldest N parked messages of Q for good (asks first)
    dlq purge Q [--yes]                    delete every message parked in Q now (asks first; later ones stay)
    outbox show SERVICE                    the service's outbox: backlog, oldest unpublished event, leases
    outbox redrive SERVICE [--steal]       publish the service's pending outbox rows now (with confirms)
    ping SERVICE [--timeout S]             RPC ping; exit 0 when a replica answers (container healthcheck)
    create-account --username U --password P --role R [--org-code C | --merchant-id M | --employer-id E]
                                           a staff / merchant / employer / integrator account through membership's
                                           create_account RPC, as a province-level operator (bootstrap, or when no
                                           admin can log in; membership must be running)

Configuration comes from the same environment as the services (``AMQP_URI``, ``MONGO_URI``,
``UNIONHUB_DB_PREFIX``, ``RABBIT_API_URI`` for the management API); ``--amqp-uri`` / ``--mongo-uri`` /
``--db-prefix`` override it. ``--json`` prints machine-readable output. Exit status: 0 done, 1 failed, 2 bad usage.
"""
import argparse
import json
import os
import socket
import sys

from . import clock, config, topology

ATTEMPTS_HEADER = "x-unionhub-attempts"
PARK_HEADERS = (ATTEMPTS_HEADER, "x-unionhub-error", "x-unionhub-failed-at", "x-unionhub-queue")


class CliError(Exception):
    pass


# ---- connections ------------------------------------------------------------------------------------------------
class Ctx:
    def __init__(self, args):
        self.amqp_uri = args.amqp_uri or config.get("AMQP_URI")
        self.mongo_uri = args.mongo_uri or config.get("MONGO_URI")
        self.db_prefix = args.db_prefix or config.get("DB_PREFIX")
        self.as_json = args.json
        self.out = sys.stdout
        self._mongo = None

    def db(self, service):
        if self._mongo is None:
            import pymongo
            self._mongo = pymongo.MongoClient(self.mongo_uri, serverSelectionTimeoutMS=5000, tz_aware=True)
        return self._mongo[config.db_name(service, {"DB_PREFIX": self.db_prefix})]

    def amqp(self, confirms=False):
        from kombu import Connection
        conn = Connection(self.amqp_uri, connect_timeout=5,
                          transport_options={"confirm_publish": True} if confirms else {})
        conn.ensure_connection(max_retries=2)
        return conn

    @property
    def vhost(self):
        from . import broker
        return broker.vhost_of(self.amqp_uri)

    def emit(self, doc, text):
        if self.as_json:
            self.out.write(json.dumps(doc, ensure_ascii=False, default=str, indent=2) + "\n")
        else:
            self.out.write(text.rstrip("\n") + "\n")

    def close(self):
        if self._mongo is not None:
            self._mongo.close()


def _table(rows, headers):
    cells = [list(map(str, headers))] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells)


def queue_state(conn, name):
    """``(messages, consumers)`` of ``name`` by a passive declare, or ``None`` when the queue does not exist."""
    from amqp.exceptions import NotFound
    ch = conn.channel()
    try:
        _, messages, consumers = ch.queue_declare(queue=name, passive=True)
        return messages, consumers
    except NotFound:
        return None
    finally:
        try:
            ch.close()
        except Exception:
            pass


def rpc_queue_names():
    from . import catalog
    return ["rpc-%s" % s for s in catalog.services()]


# ---- queues -----------------------------------------------------------------------------------------------------
def cmd_queues(ctx, args):
    rows = []
    with ctx.amqp() as conn:
        for name in rpc_queue_names() + topology.all_queue_names():
            state = queue_state(conn, name)
            rows.append({"queue": name, "messages": state[0] if state else None,
                         "consumers": state[1] if state else None, "exists": state is not None})
    ctx.emit({"queues": rows}, _table([(r["queue"], "-" if r["messages"] is None else r["messages"],
                                        "-" if r["consumers"] is None else r["consumers"]) for r in rows],
                                      ["queue", "messages", "consumers"]))
    return 0


# ---- dead-letter queues -----------------------------------------------------------------------------------------
def dlq_names():
    return [n for n in topology.all_queue_names() if n.endswith(topology.DLQ_SUFFIX)]


def dlq_name(queue):
    """Accept the main queue, its ``.dlq`` or its ``.retry`` name; return ``(dlq, main)``."""
    for suffix in (topology.DLQ_SUFFIX, topology.RETRY_SUFFIX):
        if queue.endswith(suffix):
            queue = queue[: -len(suffix)]
    return queue + topology.DLQ_SUFFIX, queue


def _summary(msg):
    """One parked message (from the management API) as a dict without the payload's personal data."""
    props = msg.get("properties") or {}
    headers = props.get("headers") or {}
    payload = msg.get("payload")
    event = {}
    if isinstance(payload, str):
        try:
            body = json.loads(payload)
            event = {"id": body.get("id"), "type": body.get("type"), "subject": body.get("subject"),
                     "time": body.get("time")}
        except (ValueError, AttributeError):
            event = {"raw": payload[:80]}
    return {"event": event, "attempts": headers.get(ATTEMPTS_HEADER), "error": headers.get("x-unionhub-error"),
            "failed_at": headers.get("x-unionhub-failed-at"), "queue": headers.get("x-unionhub-queue"),
            "redelivered": msg.get("redelivered")}


def cmd_dlq_list(ctx, args):
    from . import broker
    names = [dlq_name(args.queue)[0]] if args.queue else dlq_names()
    out = []
    with ctx.amqp() as conn:
        for name in names:
            state = queue_state(conn, name)
            depth = state[0] if state else 0
            if not depth and not args.queue and not args.all:
                continue
            entry = {"queue": name, "depth": depth, "exists": state is not None, "messages": []}
            if depth and args.peek:
                entry["messages"] = [_summary(m) for m in broker.get_messages(ctx.vhost, name, count=args.peek)]
            out.append(entry)
    lines = []
    if not out:
        lines.append("no dead-lettered messages")
    for e in out:
        lines.append("%s  depth=%d%s" % (e["queue"], e["depth"], "" if e["exists"] else " (not declared)"))
        for m in e["messages"]:
            lines.append("  - %s %s attempts=%s failed_at=%s\n    error: %s" % (
                m["event"].get("type"), m["event"].get("id"), m["attempts"], m["failed_at"], m["error"]))
    ctx.emit({"dead_letter_queues": out}, "\n".join(lines))
    return 0


def replay(conn, queue, count=None):
    """Move up to ``count`` (default: the depth when called) messages from ``queue``'s DLQ back to ``queue``.

    Each message is republished to the main queue alone (the default exchange, so no other subscriber gets a
    copy) with its parking headers removed, confirmed by the broker, and only then acked in the DLQ.
    """
    import amqp
    dlq, main = dlq_name(queue)
    if queue_state(conn, main) is None:
        raise CliError("queue %s does not exist" % main)
    state = queue_state(conn, dlq)
    if state is None:
        raise CliError("queue %s does not exist" % dlq)
    limit = state[0] if count is None else min(count, state[0])
    ch = conn.channel()
    ch.confirm_select()
    moved = []
    try:
        while len(moved) < limit:
            msg = ch.basic_get(queue=dlq, no_ack=False)
            if msg is None:
                break
            props = dict(msg.properties)
            headers = dict(props.get("application_headers") or props.get("headers") or {})
            for h in PARK_HEADERS:
                headers.pop(h, None)
            headers["x-unionhub-replays"] = int(headers.get("x-unionhub-replays", 0)) + 1
            props.pop("headers", None)
            props["application_headers"] = headers
            props.setdefault("delivery_mode", 2)
            ch.basic_publish_confirm(amqp.Message(msg.body, **props), exchange="", routing_key=main,
                                     mandatory=True)
            ch.basic_ack(msg.delivery_tag)
            moved.append(msg.body)
    finally:
        ch.close()
    return len(moved)


def cmd_dlq_replay(ctx, args):
    with ctx.amqp() as conn:
        n = replay(conn, args.queue, args.count)
    dlq, main = dlq_name(args.queue)
    ctx.emit({"replayed": n, "from": dlq, "to": main}, "replayed %d message(s) from %s to %s" % (n, dlq, main))
    return 0


def discard(conn, queue, count):
    """Delete (ack without republishing) up to ``count`` of the oldest messages parked in ``queue``'s DLQ; return
    how many went."""
    dlq, _ = dlq_name(queue)
    ch = conn.channel()
    gone = 0
    try:
        while gone < count:
            msg = ch.basic_get(queue=dlq, no_ack=False)
            if msg is None:
                break
            ch.basic_ack(msg.delivery_tag)
            gone += 1
    finally:
        ch.close()
    return gone


def confirm(ctx, args, question):
    """``--yes``, or the operator types ``yes`` at the prompt; anything else (or no terminal) declines."""
    if args.yes:
        return True
    if not sys.stdin.isatty():
        raise CliError("%s: refused without --yes (no terminal to ask)" % question)
    sys.stderr.write("%s Type yes to go on: " % question)
    sys.stderr.flush()
    return sys.stdin.readline().strip().lower() == "yes"


def cmd_dlq_discard(ctx, args):
    dlq, _ = dlq_name(args.queue)
    with ctx.amqp() as conn:
        state = queue_state(conn, dlq)
        if state is None:
            raise CliError("queue %s does not exist" % dlq)
        n = state[0] if getattr(args, "count", None) is None else min(args.count, state[0])
        if n and not confirm(ctx, args, "Delete %d parked message(s) from %s for good (of %d)?" % (n, dlq,
                                                                                                  state[0])):
            ctx.emit({"discarded": 0, "queue": dlq, "declined": True}, "nothing deleted")
            return 1
        gone = discard(conn, args.queue, n) if n else 0
    ctx.emit({"discarded": gone, "queue": dlq}, "deleted %d message(s) from %s" % (gone, dlq))
    return 0


# ---- outbox -----------------------------------------------------------------------------------------------------
def outbox_state(db):
    from . import events
    now = clock.now()
    pending = {"published_at": None}
    oldest = db.outbox.find_one(pending, {"created_at": 1, "type": 1, "event_id": 1, "attempts": 1},
                                sort=[("_id", 1)])
    return {
        "backlog": db.outbox.count_documents(pending),
        "leased": db.outbox.count_documents(dict(pending, lease_until={"$gt": now})),
        "failed_attempts": db.outbox.count_documents(dict(pending, attempts={"$gt": 0})),
        "total": db.outbox.estimated_document_count(),
        "oldest": None if not oldest else {
            "event_id": oldest.get("event_id"), "type": oldest.get("type"),
            "created_at": events.rfc3339(oldest.get("created_at")), "attempts": oldest.get("attempts"),
            "age_seconds": round((now - oldest["created_at"]).total_seconds(), 1)},
    }


def _check_service(name):
    from . import catalog
    if name not in catalog.services():
        raise CliError("unknown service %r (one of %s)" % (name, ", ".join(catalog.services())))


def cmd_outbox_show(ctx, args):
    _check_service(args.service)
    st = outbox_state(ctx.db(args.service))
    st["service"] = args.service
    o = st["oldest"]
    text = "%s outbox: %d pending (%d leased, %d after failed publishes), %d rows kept\n" % (
        args.service, st["backlog"], st["leased"], st["failed_attempts"], st["total"])
    text += ("oldest pending: %s %s created %s (%ss ago), attempts %s" % (
        o["type"], o["event_id"], o["created_at"], o["age_seconds"], o["attempts"]) if o else "nothing pending")
    ctx.emit(st, text)
    return 0


def redrive(db, service, amqp_uri, steal=False, limit=None):
    """Publish ``service``'s pending outbox rows now; return how many were published."""
    from . import outbox
    topology.declare_uri(amqp_uri, [service])
    if steal:  # a relay that died holds its lease for LEASE_SECONDS; ops may take it over at once
        db.outbox.update_many({"published_at": None}, {"$set": {"lease_until": outbox.EPOCH}})
    publisher = outbox.BatchPublisher(amqp_uri)
    owner = "cli-%s-%d" % (socket.gethostname(), os.getpid())
    total = 0
    while limit is None or total < limit:
        n = outbox.relay_batch(db, service, publisher, owner,
                               limit=outbox.BATCH if limit is None else min(outbox.BATCH, limit - total),
                               keep=config.get("OUTBOX_KEEP_PUBLISHED"))
        if not n:
            break
        total += n
    publisher.close()
    return total


def cmd_outbox_redrive(ctx, args):
    _check_service(args.service)
    db = ctx.db(args.service)
    n = redrive(db, args.service, ctx.amqp_uri, steal=args.steal, limit=args.limit)
    left = db.outbox.count_documents({"published_at": None})
    ctx.emit({"service": args.service, "published": n, "backlog": left},
             "%s: published %d event(s); %d still pending" % (args.service, n, left))
    return 0


# ---- ping -------------------------------------------------------------------------------------------------------
def ping(amqp_uri, service, timeout=5.0):
    from nameko.standalone.rpc import ClusterRpcProxy
    with ClusterRpcProxy({"AMQP_URI": amqp_uri, "serializer": "json"}, timeout=timeout) as rpc:
        return getattr(rpc, service).ping()


def cmd_ping(ctx, args):
    try:
        answer = ping(ctx.amqp_uri, args.service, args.timeout)
    except Exception as exc:
        ctx.emit({"service": args.service, "ok": False, "error": "%s: %s" % (type(exc).__name__, exc)},
                 "%s: DOWN (%s: %s)" % (args.service, type(exc).__name__, str(exc)[:200]))
        return 1
    ctx.emit(answer, "%s: ok (replica %s)" % (args.service, answer.get("replica")))
    return 0 if answer.get("ok") else 1


# ---- accounts ---------------------------------------------------------------------------------------------------
# the province-level operator the CLI acts as (the RPC checks the new account against this scope)
CLI_ACTOR = {"sub": "cli", "role": "union_admin", "scope": "51", "merchant_id": None, "employer_id": None}


def create_account(amqp_uri, username, password, role, org_code=None, merchant_id=None, employer_id=None,
                   timeout=30.0):
    """Create an account through membership's ``create_account`` RPC (one way to make an account: its schema, scope
    check, hash and document), as the province-level ``CLI_ACTOR``; returns the account view."""
    from nameko.standalone.rpc import ClusterRpcProxy
    payload = {k: v for k, v in {"username": username, "password": password, "role": role, "org_code": org_code,
                                 "merchant_id": merchant_id, "employer_id": employer_id}.items() if v is not None}
    with ClusterRpcProxy({"AMQP_URI": amqp_uri, "serializer": "json"}, timeout=timeout) as rpc:
        return rpc.membership.create_account(CLI_ACTOR, payload)


def cmd_create_account(ctx, args):
    from .errors import AppError
    password = args.password
    if password == "-":
        password = sys.stdin.readline().rstrip("\n")
    try:
        view = create_account(ctx.amqp_uri, args.username, password, args.role, args.org_code, args.merchant_id,
                              args.employer_id)
    except AppError as exc:
        doc = exc.to_problem()
        ctx.emit(doc, "error: %s %s" % (doc.get("detail"), json.dumps(doc.get("errors") or {}, ensure_ascii=False)))
        return 1
    ctx.emit(view, "created %s account %s (%s)" % (view["role"], view["username"], view["id"]))
    return 0


# ---- argument parsing -------------------------------------------------------------------------------------------
def parser():
    p = argparse.ArgumentParser(prog="python -m unionhub_kit", description="UnionHub operations")
    p.add_argument("--amqp-uri")
    p.add_argument("--mongo-uri")
    p.add_argument("--db-prefix")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    sub = p.add_subparsers(dest="cmd", required=True)

    sub.add_parser("queues", help="depths of every topology and RPC queue").set_defaults(fn=cmd_queues)

    dlq = sub.add_parser("dlq", help="dead-letter queues").add_subparsers(dest="dlq_cmd", required=True)
    ls = dlq.add_parser("list", help="depth and parked messages")
    ls.add_argument("--queue", help="one queue (main or .dlq name)")
    ls.add_argument("--peek", type=int, default=5, help="messages to show per queue (default 5)")
    ls.add_argument("--all", action="store_true", help="list empty dead-letter queues too")
    ls.set_defaults(fn=cmd_dlq_list)
    rp = dlq.add_parser("replay", help="move parked messages back to their queue")
    rp.add_argument("queue")
    rp.add_argument("--count", type=int, default=None, help="at most this many (default: all parked now)")
    rp.set_defaults(fn=cmd_dlq_replay)
    dc = dlq.add_parser("discard", help="delete the oldest parked messages for good")
    dc.add_argument("queue")
    dc.add_argument("--count", type=int, default=None, help="at most this many (default: all parked now)")
    dc.add_argument("--yes", action="store_true", help="do not ask")
    dc.set_defaults(fn=cmd_dlq_discard)
    pu = dlq.add_parser("purge", help="delete every message parked now")
    pu.add_argument("queue")
    pu.add_argument("--yes", action="store_true", help="do not ask")
    pu.set_defaults(fn=cmd_dlq_discard)

    ob = sub.add_parser("outbox", help="a service's transactional outbox").add_subparsers(dest="ob_cmd",
                                                                                          required=True)
    sh = ob.add_parser("show")
    sh.add_argument("service")
    sh.set_defaults(fn=cmd_outbox_show)
    rd = ob.add_parser("redrive")
    rd.add_argument("service")
    rd.add_argument("--steal", action="store_true", help="take over leases held by relays that died")
    rd.add_argument("--limit", type=int, default=None)
    rd.set_defaults(fn=cmd_outbox_redrive)

    pg = sub.add_parser("ping", help="RPC ping a service (exit 0 when it answers)")
    pg.add_argument("service")
    pg.add_argument("--timeout", type=float, default=5.0)
    pg.set_defaults(fn=cmd_ping)

    ca = sub.add_parser("create-account", help="create a staff/merchant/employer/integrator account")
    ca.add_argument("--username", required=True)
    ca.add_argument("--password", required=True, help="'-' reads it from standard input")
    ca.add_argument("--role", required=True, choices=["union_admin", "merchant", "employer", "integrator"])
    ca.add_argument("--org-code")
    ca.add_argument("--merchant-id")
    ca.add_argument("--employer-id")
    ca.set_defaults(fn=cmd_create_account)
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    ctx = Ctx(args)
    try:
        return args.fn(ctx, args)
    except CliError as exc:
        sys.stderr.write("error: %s\n" % exc)
        return 1
    except Exception as exc:  # a broker or store that does not answer: say so, no traceback
        sys.stderr.write("error: %s: %s\n" % (type(exc).__name__, exc))
        return 1
    finally:
        ctx.close()
