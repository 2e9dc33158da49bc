"""``make seed-scale``: the whole province in the store ``make run`` uses, one service's ``seed_scale`` module after
another, each writing only its own database.

    python -m deploy.seed_scale                      # everything, at the real platform's volumes (hours)
    python -m deploy.seed_scale --users 500000       # a share: every volume scales with the users
    python -m deploy.seed_scale --only membership,notify

Steps (``STEPS``, in this order; a service whose module does not exist yet is skipped): ``services.<name>.seed_scale``
with a ``run(ctx)`` function (``Context`` below: the databases, the people of ``unionhub_kit.population``, batches
with a progress bar and a checkpoint), or else a ``main(argv)`` command line run with no arguments. A new service (stations) adds
``services/stations/seed_scale.py`` with ``run(ctx)`` and is picked up by its place in ``STEPS``.

Resumable: a step records each finished batch in its database's ``seed_scale`` collection; run the command again after
an interruption and every step continues at its first unfinished batch (a batch cut short is written again: its
documents have fixed ids, the ones already there are skipped). ``--restart`` forgets the checkpoints (it does not
delete data: start from an empty store for that, ``make clean-data``).

Progress: one line per step, redrawn in place: a bar, done / total, the rate and the time left.
"""
import argparse
import datetime
import importlib
import os
import shutil
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


from unionhub_kit import config, mongo, population  # noqa: E402

STEPS = ("membership", "benefits", "notify", "jobs", "stations")


class Progress:
    """A progress bar on one terminal line: ``name [#####.....] 45% 225,000/500,000 8,200/s 0:33 left``."""

    def __init__(self, name, total, unit, stream=sys.stdout):
        self.name, self.total, self.unit, self.stream = name, max(total, 1), unit, stream
        self.started, self.done, self.base = time.time(), 0, 0
        self.tty = stream.isatty()
        self.last_print = 0.0

    def resume_at(self, done):
        self.done = self.base = done

    def add(self, n):
        self.done += n
        now = time.time()
        if self.tty or now - self.last_print > 5 or self.done >= self.total:
            self.last_print = now
            self.draw()

    def rate(self):
        return (self.done - self.base) / max(time.time() - self.started, 1e-6)

    def draw(self, final=False):
        frac = min(1.0, self.done / self.total)
        rate = self.rate()
        left = (self.total - self.done) / rate if rate > 0 else 0
        width = max(10, min(30, shutil.get_terminal_size((100, 20)).columns - 80))
        bar = "#" * int(frac * width) + "." * (width - int(frac * width))
        line = "%-22s [%s] %3d%% %11s/%-11s %8s %s/s  %s" % (
            self.name, bar, frac * 100, "{:,}".format(self.done), "{:,}".format(self.total),
            "{:,.0f}".format(rate), self.unit, ("%d:%02d:%02d left" % (left // 3600, left % 3600 // 60, left % 60))
            if not final else "%.0f s" % (time.time() - self.started))
        self.stream.write(("\r" + line) if self.tty and not final else line + "\n")
        if self.tty and final:
            self.stream.write("\n")
        self.stream.flush()


class Context:
    """What a service's ``run(ctx)`` gets.

    * ``ctx.db(service)``: that service's database (``MONGO_URI``, ``UNIONHUB_DB_PREFIX`` as the services use them);
    * ``ctx.users``, ``ctx.province`` (``population.Province``), ``ctx.batch_size``, ``ctx.per_user`` (volumes per
      user: ``coupons``, ``inbox``);
    * ``ctx.batches(db, step, unit="users")``: yields ``(b, people)`` for every batch of users not yet recorded as
      done in ``db.seed_scale``; a batch counts as done when the loop body returns for it;
    * ``ctx.insert(coll, docs)``: ``insert_many`` that skips documents already there (a batch written again);
    * ``ctx.once(db, step, fn)``: ``fn()`` unless the step is recorded as done;
    * ``ctx.progress(name, total, unit)``: a progress bar of a step's own.
    """

    def __init__(self, client, users, batch_size, per_user, seed=13, restart=False, union_share=1.0):
        self.client, self.users, self.batch_size, self.per_user = client, users, batch_size, per_user
        self.province = population.Province(seed, union_share, self._epoch(restart))
        self.restart = restart
        self.timings = {}

    def _epoch(self, restart):
        """The end of the loaded history: the day the load began (kept, so a resumed load makes the same people)."""
        marks = self.db("membership").seed_scale
        today = datetime.datetime.now(datetime.timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
        if restart:
            marks.delete_one({"_id": "epoch"})
        marks.update_one({"_id": "epoch"}, {"$setOnInsert": {"at": today}}, upsert=True)
        return marks.find_one({"_id": "epoch"})["at"]

    def db(self, service):
        return self.client[config.db_name(service)]

    def n_batches(self):
        return (self.users + self.batch_size - 1) // self.batch_size

    def _done(self, db, step):
        doc = db.seed_scale.find_one({"_id": step}) or {}
        if self.restart and doc:
            db.seed_scale.delete_one({"_id": step})
            return {}
        return doc

    def batches(self, db, step, unit="users"):
        state = self._done(db, step)
        if state.get("batch_size") not in (None, self.batch_size):  # batch b is the same people whatever --users
            raise SystemExit("%s: checkpointed with --batch %s; run with that, or --restart on an empty store"
                             % (step, state.get("batch_size")))
        done = set(state.get("batches", []))
        bar = Progress("%s %s" % (db.name.split("_")[-1], step), self.users, unit)
        bar.resume_at(sum(min(self.batch_size, self.users - b * self.batch_size) for b in done))
        started = time.time()
        for b in range(self.n_batches()):
            if b in done:
                continue
            people = population.batch(self.province, b, self.batch_size, self.users)
            yield b, people
            db.seed_scale.update_one({"_id": step}, {"$addToSet": {"batches": b},
                                                     "$set": {"users": self.users, "batch_size": self.batch_size}},
                                     upsert=True)
            bar.add(len(people))
        bar.draw(final=True)
        self.timings["%s.%s" % (db.name, step)] = {"seconds": round(time.time() - started, 1),
                                                   "per_second": round(bar.rate(), 1)}

    @staticmethod
    def progress(name, total, unit):
        """A ``Progress`` bar of a step's own (``.add(n)``)."""
        return Progress(name, total, unit)

    def once(self, db, step, fn):
        if self._done(db, step).get("finished"):
            return None
        started = time.time()
        out = fn()
        db.seed_scale.update_one({"_id": step}, {"$set": {"finished": True}}, upsert=True)
        self.timings["%s.%s" % (db.name, step)] = {"seconds": round(time.time() - started, 1)}
        return out

    insert = staticmethod(mongo.insert_new)


def store_size(client):
    """Bytes on disk of every database (the store's ``dbStats``)."""
    total = 0
    for name in client.list_database_names():
        try:
            total += int(client[name].command("dbStats").get("storageSize") or 0)
        except Exception:  # noqa: BLE001  (a store without dbStats sizes: not counted)
            pass
    return total


def main(argv=None):
    ap = argparse.ArgumentParser(description="Load the whole province (or a share of it) into the store.")
    ap.add_argument("--users", type=int, default=population.USERS, help="registered users (7,500,000)")
    ap.add_argument("--batch", type=int, default=5000, help="users per batch (and per checkpoint)")
    ap.add_argument("--coupons-per-user", type=float, default=6.7,
                    help="coupons a user claimed in the year (capacity model: ~50 M a year / 7.5 M users)")
    ap.add_argument("--inbox-per-user", type=float, default=30.0,
                    help="inbox entries a user keeps (capacity model: 5 a day x 90 days x 500,000 DAU / 7.5 M)")
    ap.add_argument("--only", help="comma-separated services (default: every step)")
    ap.add_argument("--restart", action="store_true", help="forget the checkpoints")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--union-share", type=float, default=1.0,
                    help="grassroots unions as a share of the seed's 41,900 (tests use a few hundred)")
    args = ap.parse_args(argv)
    # a load's batches are big writes on a busy store: not bounded like a request's (unionhub_kit.mongo)
    os.environ.setdefault("STORE_TIMEOUT_MS", "600000")
    import pymongo
    uri = config.get("MONGO_URI")
    client = pymongo.MongoClient(uri, tz_aware=True, serverSelectionTimeoutMS=5000)
    try:
        client.admin.command("ping")
    except Exception as exc:  # noqa: BLE001
        print("the store at %s does not answer (%s): start it with make run, or set MONGO_URI" % (uri, exc))
        return 2
    ctx = Context(client, args.users, args.batch, {"coupons": args.coupons_per_user, "inbox": args.inbox_per_user},
                  args.seed, args.restart, args.union_share)
    only = set(args.only.split(",")) if args.only else None
    print("seed-scale: %s users into %s (batches of %d)" % ("{:,}".format(args.users), uri, args.batch), flush=True)
    started, size_before = time.time(), store_size(client)
    for name in STEPS:
        if only and name not in only:
            continue
        try:
            module = importlib.import_module("services.%s.seed_scale" % name)
        except ModuleNotFoundError as exc:
            if exc.name in ("services.%s" % name, "services.%s.seed_scale" % name):
                print("%s: no seed_scale module yet, skipped" % name)
                continue
            raise
        step_started = time.time()
        if hasattr(module, "run"):
            module.run(ctx)
        else:
            module.main([])
        print("%s: done in %.0f s" % (name, time.time() - step_started), flush=True)
    size = store_size(client)
    elapsed = time.time() - started
    print("seed-scale: done in %.0f s; the store grew by %.2f GB (now %.2f GB)" % (
        elapsed, (size - size_before) / 1e9, size / 1e9))
    for step, t in ctx.timings.items():
        print("  %-40s %s" % (step, t))
    return 0


if __name__ == "__main__":
    sys.exit(main())
