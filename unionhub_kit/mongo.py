"""pymongo DependencyProvider: one client per container, the service's own database, indexes ensured at start.

Every client the kit makes is **durable** and **bounded** (``client_options``):

* write concern ``w: "majority", j: true``: a write is acknowledged only once it is in the journal (on a replica set:
  on a majority). The API answers, and a consumer acks its message, only after that. (The embedded store journals a
  committed *transaction* only with ``--sync-on-commit``, which ``deploy/stack.py`` passes.)
* ``STORE_TIMEOUT_MS`` (default 4000, below ``RPC_TIMEOUT``) bounds every transaction of a request including its
  retries (``pymongo.timeout`` in ``transaction``; an event handler's transaction gets
  ``STORE_BACKGROUND_TIMEOUT_MS``, 30 s, as nobody waits on it); any other round trip is bounded by
  ``STORE_SOCKET_TIMEOUT_MS`` (default 15000, a backstop against a store that hangs); index builds at start by
  ``STORE_INDEX_TIMEOUT_MS`` (30 min). The server selection waits ``STORE_SELECT_TIMEOUT_MS`` (default 3000). A
  store that stalls or is gone becomes an error, which an RPC answers as 503 ``SERVICE_UNAVAILABLE``
  (``unionhub_kit.rpc``) and an event handler retries.
"""
import logging
import os

import pymongo
import pymongo.errors
from nameko.extensions import DependencyProvider, SharedExtension

from . import config


def store_timeout():
    """Seconds any one store operation (or whole transaction) may take."""
    return config.get("STORE_TIMEOUT_MS") / 1000.0


def undurable_for_bench():
    """``UNIONHUB_UNDURABLE_FOR_BENCH=1``: writes acknowledged before the journal (``w: 1``) and a store without
    ``--sync-on-commit``, only so ``bench/durability.py`` can measure what durability costs. Development only."""
    if not config.get("UNIONHUB_UNDURABLE_FOR_BENCH"):
        return False
    from . import keys
    if not keys.is_development():
        raise RuntimeError("UNIONHUB_UNDURABLE_FOR_BENCH is for benchmarks in development, never %s"
                           % keys.environment())
    return True


def client_options(pool=100):
    durable = dict(w=1, journal=False) if undurable_for_bench() else dict(w="majority", journal=True)
    return dict(durable, socketTimeoutMS=config.get("STORE_SOCKET_TIMEOUT_MS"),
                serverSelectionTimeoutMS=config.get("STORE_SELECT_TIMEOUT_MS"), connectTimeoutMS=2000,
                maxPoolSize=pool, tz_aware=True)


WRITE_COMMANDS = ("insert", "update", "delete", "findAndModify")


class WriteAudit:
    """``UNIONHUB_WRITE_AUDIT=<path prefix>``: every write command of this process appended to
    ``<prefix>.<pid>`` as ``<db>.<collection> txn|plain``. A collection written both inside and outside
    transactions is where a dead client's open transaction can hold up a plain write (``bench/chaos.py`` reports
    them); nothing in production sets it."""

    def __init__(self, prefix):
        self.path = "%s.%d" % (prefix, os.getpid())
        self.seen = set()

    def started(self, event):
        if event.command_name not in WRITE_COMMANDS:
            return
        cmd = event.command
        key = "%s.%s %s" % (event.database_name, cmd.get(event.command_name),
                            "txn" if cmd.get("autocommit") is False else "plain")
        if key not in self.seen:
            self.seen.add(key)
            with open(self.path, "a") as f:
                f.write(key + "\n")

    def succeeded(self, event):
        pass

    def failed(self, event):
        pass


def _listeners():
    prefix = config.get("UNIONHUB_WRITE_AUDIT")
    if not prefix:
        return {}
    from pymongo import monitoring

    class Listener(WriteAudit, monitoring.CommandListener):
        pass
    return {"event_listeners": [Listener(prefix)]}


class MongoClient(SharedExtension):
    """The container's one ``pymongo.MongoClient`` (shared by ``Mongo``, ``Outbox`` and ``ServiceMetrics``), made
    on first use (a container that never touches the store never connects) and closed when the container stops."""

    def __init__(self):
        super().__init__()
        self._client = None

    @property
    def client(self):
        if self._client is None:
            cfg = self.container.config
            new = pymongo.MongoClient(config.get("MONGO_URI", cfg), **client_options(config.get("MONGO_POOL", cfg)),
                                      **_listeners())
            # extensions are set up concurrently (green threads): the first client stored wins
            if self._client is None:
                self._client = new
            else:
                new.close()
        return self._client

    @property
    def database(self):
        """The service's own database."""
        return self.client[config.db_name(self.container.service_name, self.container.config)]

    def stop(self):
        client, self._client = self._client, None
        if client is not None:
            client.close()

    kill = stop


def ensure_kit_indexes(db):
    db.processed_events.create_index([("at", pymongo.ASCENDING)])
    # one index serves both relays' reads: a process's own unleased rows (published_at None, lease_until the epoch,
    # owner) and anyone's rows free to lease (published_at None, lease_until before now). Each secondary index costs
    # the embedded store ~0.15 ms of CPU per row on insert and again on delete (1,000s of outbox rows, journaled,
    # batches of 50: insert 0.48 -> 0.33 ms a row, delete 0.63 -> 0.44 with one index instead of two), and every
    # claim and every event writes and deletes a row
    db.outbox.create_index([("published_at", pymongo.ASCENDING), ("lease_until", pymongo.ASCENDING),
                            ("owner", pymongo.ASCENDING)])
    existing = db.outbox.index_information()
    for old in ("published_at_1_owner_1", "published_at_1_lease_until_1"):  # what the two indexes were
        if old in existing:
            try:
                db.outbox.drop_index(old)
            except pymongo.errors.OperationFailure:  # another process dropped it first
                pass
    db.idempotency.create_index([("created_at", pymongo.ASCENDING)])


class Mongo(DependencyProvider):
    """Injects the service's ``pymongo.database.Database``.

    ``indexes`` is a function ``f(db)`` from the service's store module; it runs once at container setup.
    """

    store = MongoClient()

    def __init__(self, indexes=None):
        self.indexes = indexes
        self.database = None

    def setup(self):
        self.database = self.store.database
        with pymongo.timeout(config.get("STORE_INDEX_TIMEOUT_MS") / 1000.0):
            ensure_kit_indexes(self.database)
            if self.indexes:
                self.indexes(self.database)

    def get_dependency(self, worker_ctx):
        return self.database


def open_from_env(service):
    """``service``'s database at ``MONGO_URI`` / ``UNIONHUB_DB_PREFIX``, for command-line tools (seed, rekey, bench);
    None, having said why, when no store answers."""
    client = pymongo.MongoClient(config.get("MONGO_URI"), tz_aware=True, serverSelectionTimeoutMS=5000)
    try:
        client.admin.command("ping")
    except pymongo.errors.PyMongoError:
        print("no store answers at %s: start one (make run) or set MONGO_URI" % config.get("MONGO_URI"))
        return None
    return client[config.db_name(service)]


def background_timeout():
    """Seconds a transaction of an event handler or other background work may take, retries of write conflicts
    included (``STORE_BACKGROUND_TIMEOUT_MS``, default 30000): nobody waits on it, and a burst of events that write
    the same documents (the welcome coupons of one campaign) conflicts and retries for longer than a request may."""
    return config.get("STORE_BACKGROUND_TIMEOUT_MS") / 1000.0


def transaction(db, fn, timeout=None):
    """Run ``fn(session)`` in a multi-document transaction (retried on transient errors, all within ``timeout``
    seconds, by default ``store_timeout()``); return its result. What ``fn`` registered with ``after_commit`` runs
    once the transaction has committed (not if it failed)."""
    with pymongo.timeout(timeout or store_timeout()), db.client.start_session() as session:
        hooks = _AFTER_COMMIT[id(session)] = {}
        try:
            result = session.with_transaction(fn)
        finally:
            _AFTER_COMMIT.pop(id(session), None)
    for hook in hooks.values():
        try:
            hook()
        except Exception:  # the transaction has committed: a failing hook must not make it look failed
            logging.getLogger("unionhub.mongo").exception("an after-commit hook failed")
    return result


_AFTER_COMMIT = {}  # id(session) -> {key: fn}, for the sessions of ``transaction`` (green threads: no lock needed)


def after_commit(session, fn, key=None):
    """Run ``fn()`` once ``session``'s transaction (one of ``transaction``'s) has committed; registered twice under
    one ``key`` (a retried transaction runs its body again), it runs once. A session not of ``transaction`` never
    runs it (the caller must not rely on it for correctness: the outbox uses it only to wake its relay sooner)."""
    hooks = _AFTER_COMMIT.get(id(session))
    if hooks is None:
        return
    hooks[key if key is not None else fn] = fn


def unavailable(exc):
    """Whether a store error means "the store did not answer in time / is not reachable" (503), not a bug."""
    from pymongo import errors
    if isinstance(exc, (errors.ConnectionFailure, errors.ExecutionTimeout, errors.WTimeoutError)):
        return True
    if isinstance(exc, errors.PyMongoError):
        return bool(getattr(exc, "timeout", False)) or exc.has_error_label("TransientTransactionError")
    return False


def upsert_returning(coll, flt, update, session=None, attempts=5):
    """``find_one_and_update(..., upsert=True)`` returning the document after the update.

    Two upserts of one new ``_id`` race: on MongoDB the loser may get a duplicate key error, and the embedded store
    may answer it with no document at all; the loser then simply updates the document the winner created. Inside a
    transaction (``session`` in one) an error has aborted it, so it is raised for the transaction to be retried
    whole; only a missing answer is tried again there."""
    in_txn = session is not None and session.in_transaction
    for _ in range(attempts):
        try:
            doc = coll.find_one_and_update(flt, update, upsert=True, return_document=pymongo.ReturnDocument.AFTER,
                                           session=session)
        except pymongo.errors.DuplicateKeyError:
            if in_txn:
                raise
            doc = None
        if doc is not None:
            return doc
    raise RuntimeError("upsert into %s did not return a document" % coll.name)


def update_returning(coll, flt, update, projection=None, upsert=False, session=None):
    """The document after ``update`` of the one matching ``flt`` (None when none matches and not ``upsert``), as
    ``find_one_and_update(..., return_document=AFTER)`` answers it, but written as an update by ``_id`` and a read.

    Why: the embedded store writes a ``findAndModify`` under the filter ``{_id, $and: [query]}``, which its planner
    cannot drive by any index (a top-level operator), so every matching ``findAndModify`` scans the whole collection
    (measured: 0.7 ms to find a user by phone, 760 ms to ``findAndModify`` it at 20,000 users; 3.2 s at 100,000).
    Here each step is a point lookup. Inside a transaction (``session`` in one) the answer is exact; outside one, a
    concurrent write to the same document may land between the update and the read and show in the answer (use
    ``find_one_and_update`` where that matters and the collection is small, e.g. a sequence counter)."""
    doc_id = flt.get("_id")
    if not isinstance(doc_id, (str, int, bytes)) and not hasattr(doc_id, "binary"):  # not a point _id: find it
        found = coll.find_one(flt, {"_id": 1}, session=session)
        if found is None:
            if not upsert:
                return None
            doc_id = coll.update_one(flt, update, upsert=True, session=session).upserted_id
            if doc_id is None:  # a concurrent upsert created it meanwhile: ours updated that one
                return coll.find_one(flt, projection, session=session)
            return coll.find_one({"_id": doc_id}, projection, session=session)
        doc_id = found["_id"]
        flt = dict({"_id": doc_id}, **{k: v for k, v in flt.items() if k != "_id"})  # _id first: the store's key
    result = coll.update_one(flt, update, upsert=upsert, session=session)
    if not result.matched_count and result.upserted_id is None:
        return None
    return coll.find_one({"_id": doc_id}, projection, session=session)


def duplicate_field(exc):
    """The indexed field a ``DuplicateKeyError`` is about (the first of its key)."""
    pattern = (exc.details or {}).get("keyPattern") or {}
    return next(iter(pattern), None)


def insert_unique(coll, doc, session, conflict, fields=None):
    """Insert ``doc``; a duplicate key (on one of ``fields``, when given; any, when not) raises ``conflict`` (an
    ``AppError``: the 409 the caller answers) instead. Another duplicate is raised as it is."""
    try:
        coll.insert_one(doc, session=session)
    except pymongo.errors.DuplicateKeyError as exc:
        if fields is None or duplicate_field(exc) in fields:
            raise conflict
        raise


DUPLICATE_KEY = 11000


def insert_new_many(coll, docs):
    """``insert_many`` (unordered, outside any transaction) that skips the documents whose unique key exists
    already; returns the positions in ``docs`` of those skipped (idempotency by natural keys: a redelivered event
    whose documents carry keys made from its id inserts nothing again)."""
    if not docs:
        return set()
    try:
        coll.insert_many(docs, ordered=False)
        return set()
    except pymongo.errors.BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if any(e.get("code") != DUPLICATE_KEY for e in errors):
            raise
        return {e["index"] for e in errors}


def insert_new(coll, docs):
    """``insert_many`` that skips documents whose unique key exists already (a redone batch, a rerun seed);
    returns how many were inserted."""
    if not docs:
        return 0
    try:
        return len(coll.insert_many(docs, ordered=False).inserted_ids)
    except pymongo.errors.BulkWriteError as exc:
        if any(e.get("code") != DUPLICATE_KEY for e in exc.details.get("writeErrors", [])):
            raise
        return exc.details.get("nInserted", 0)
