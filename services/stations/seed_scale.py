"""Seed-scale data for the stations service: ``run(ctx)`` is the stations step of ``make seed-scale``
(``deploy.seed_scale``, visitors are its population's users); ``python -m services.stations.seed_scale`` alone seeds
with visitor ids of its own.

The platform's volumes: 7,473 stations (3,521 of them outdoor-worker stations) across Sichuan's 183 counties and
2.82 million visits over the past 365 days, straight into the stations database of ``MONGO_URI`` /
``UNIONHUB_DB_PREFIX``, in ``insert_many`` batches with progress output. Documents are shaped as the service writes
them (cells, region prefixes, poster codes), and the counters are written as the service's event handler would have
left them (visits and distinct visitors per station, county, prefecture and province and month; open stations per
region), so search, check-ins and statistics work on them at once. No events are published: seeded data stands for
history. The members' 30-minute check-in windows are not seeded (a year-old visit holds no window).

Placement (an approximation, see ``geo``): each station lies around its county's seat, inside the seat's Voronoi cell
(nearer that seat than any other), east of the seat in the counties on the Tibetan and Qinghai border. Stations per
county: weight 3 for Chengdu's districts, 2 for other districts (区), 1 for counties and county-level cities. Visits
grow over the year (the platform's visits rose 126 % in a year), follow meal and rest hours, and come from a pool of
regular riders per county (40 per station), so distinct visitors are fewer than visits.

Sizes: ``--stations``, ``--visits`` (tests use small numbers); ``--drop`` empties the seeded collections first;
``--seed`` fixes the random generator.
"""
import argparse
import bisect
import collections
import datetime
import itertools
import random
import sys
import time
import zlib

from unionhub_kit import clock, population, regions

from . import domain, geo, store
from .schemas import AMENITIES, CODE_ALPHABET, CODE_LENGTH

STATIONS, VISITS = 7473, 2820000
OUTDOOR_SHARE = 3521 / 7473
OTHER_KINDS = ("driver_home", "courier_home", "worker_home")
RIDERS_PER_STATION = 40
# amenity -> share of stations that have it
AMENITY_SHARE = {"water": 0.95, "hot_water": 0.85, "microwave": 0.6, "restroom": 0.7, "rest_area": 0.9,
                 "charging": 0.75, "first_aid": 0.6, "aed": 0.12, "wifi": 0.55, "repair_tools": 0.3}
EVERY_DAY = [1, 2, 3, 4, 5, 6, 7]
# (opening hours, weight): 24 hours, day, evening into the night (past midnight), office hours on weekdays
HOURS = [([{"days": EVERY_DAY, "open": "00:00", "close": "24:00"}], 45),
         ([{"days": EVERY_DAY, "open": "08:00", "close": "20:00"}], 30),
         ([{"days": EVERY_DAY, "open": "17:00", "close": "02:00"}], 10),
         ([{"days": [1, 2, 3, 4, 5], "open": "09:00", "close": "18:00"},
           {"days": [6, 7], "open": "10:00", "close": "16:00"}], 15)]
# visits by hour of day (Asia/Shanghai): meals and the afternoon rest
YEAR, DAY = datetime.timedelta(days=365), datetime.timedelta(days=1)
GROWTH = 1.26
HOUR_WEIGHTS = [1, 1, 1, 1, 1, 2, 3, 5, 6, 5, 6, 10, 12, 8, 7, 6, 6, 8, 11, 9, 6, 4, 3, 2]
STREETS = ["人民路", "解放路", "建设路", "中山路", "滨江路", "文化路", "新华路", "光明路", "顺城街", "春熙路"]


def station_weights():
    """``[(county code, weight)]``: where the stations are."""
    out = []
    for c in regions.counties():
        district = c["name_zh"].endswith("区")
        out.append((c["code"], 3 if district and c["code"].startswith("5101") else 2 if district else 1))
    return out


def seed_id(n):
    """A 24-hex-digit id (the shape of the service's own ids), recognisably seeded."""
    return "5eed%020x" % n


def station(rng, n, county, code, now):
    lat, lng = geo.place_in_county(rng, county)
    kind = "outdoor" if rng.random() < OUTDOOR_SHARE else rng.choice(OTHER_KINDS)
    name = regions.all_codes()[county]
    p = {"name": "%s%s户外劳动者服务站" % (name, rng.choice(STREETS)) if kind == "outdoor" else
                 "%s%s%s" % (name, rng.choice(STREETS), {"driver_home": "司机之家", "courier_home": "快递小哥之家",
                                                          "worker_home": "职工驿站"}[kind]),
         "kind": kind, "region_code": county, "address": "%s%s%d号" % (name, rng.choice(STREETS), rng.randint(1, 999)),
         "location": {"lat": round(lat, 6), "lng": round(lng, 6)},
         "opening_hours": rng.choices([h for h, _ in HOURS], [w for _, w in HOURS])[0],
         "amenities": [a for a in AMENITIES if rng.random() < AMENITY_SHARE[a]] or ["water"],
         "contact_phone": None, "code": code}
    created = now - datetime.timedelta(days=rng.uniform(0, 730))
    return domain.station_doc(seed_id(n), p, created, "seed")


def codes(rng, n):
    out = set()
    while len(out) < n:
        out.add("".join(rng.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH)))
    return sorted(out, key=lambda _: rng.random())


def year_months(now):
    """The past 365 days cut at Asia/Shanghai month boundaries, oldest first: ``[(YYYY-MM, start, end)]`` in UTC
    (13 pieces: the first and the last month are partial)."""
    begin = now - YEAR
    out = []
    first = domain.local(now).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = now
    while end > begin:
        start = max(first.astimezone(datetime.timezone.utc), begin)
        out.append((first.strftime("%Y-%m"), start, end))
        end = start
        first = (first - datetime.timedelta(days=1)).replace(day=1)
    return out[::-1]


def shares(pieces, now):
    """The share of the year's visits in each piece: visits per day grow linearly to 2.26 x (126 % up in a year)."""
    begin = now - YEAR

    def mass(t):  # visits from the year's start to t, in units of the first day's visits
        x = (t - begin) / DAY
        return x + GROWTH * x * x / (2 * 365)
    w = [mass(end) - mass(start) for _, start, end in pieces]
    return [x / sum(w) for x in w]


def visit_time(rng, start, end):
    """A moment in ``[start, end)`` following the hours riders rest at."""
    for _ in range(20):
        day = start + datetime.timedelta(days=rng.randrange(max(1, (end - start).days + 1)))
        local = domain.local(day).replace(hour=rng.choices(range(24), HOUR_WEIGHTS)[0], minute=rng.randrange(60),
                                          second=rng.randrange(60), microsecond=0)
        at = local.astimezone(datetime.timezone.utc)
        if start <= at < end:
            return at
    return start + (end - start) * rng.random()


class Progress:
    def __init__(self, what, total, unit=""):
        self.what, self.total, self.done, self.started = what, total, 0, time.time()

    def add(self, n):
        before, self.done = self.done, self.done + n
        if self.done // 100000 == before // 100000 and self.done < self.total:
            return
        rate = self.done / max(1e-6, time.time() - self.started)
        print("  %-9s %9d / %d  (%.0f/s)" % (self.what, self.done, self.total, rate), flush=True)


def seed(db, n_stations=7473, n_visits=2820000, batch=5000, rng_seed=14, drop=False, now=None, users=None,
         progress=Progress):
    """Stations and visits into ``db``. Visitors: ``users`` given, ids of the population's users
    (``population.user_id``: those of ``make seed-scale``'s membership), a county's riders drawn from a fixed slice of
    them; else ids of their own."""
    rng = random.Random(rng_seed)
    now = now or clock.now()
    if drop:
        for name in ("stations", "visits", "counters", "visitor_marks", "last_visits"):
            db[name].drop()
    store.ensure_indexes(db)
    # ---- stations
    counties, weights = zip(*station_weights())
    where = rng.choices(counties, weights, k=n_stations)
    docs = [station(rng, i, county, code, now) for i, (county, code) in enumerate(zip(where, codes(rng, n_stations)))]
    last = store.next_revs(db, n_stations)
    for i, d in enumerate(docs):
        d["rev"] = last - n_stations + 1 + i
    bar = progress("stations", n_stations, "stations")
    for k in range(0, n_stations, batch):
        store.insert_many(db.stations, docs[k:k + batch])
        bar.add(len(docs[k:k + batch]))
    opened = collections.Counter()
    for d in docs:
        opened.update(domain.open_deltas(None, d))
    store.bump_open(db, opened, None)
    # ---- visits, month by month (distinct visitors need one month's members in memory at a time)
    popularity = list(itertools.accumulate(rng.lognormvariate(0, 1) for _ in docs))
    riders = collections.Counter(d["region_code"] for d in docs)
    bar = progress("visits", n_visits, "visits")
    done = 0
    seq = itertools.count()
    months = year_months(now)
    for (month, start, end), share in zip(months, shares(months, now)):
        n_month = round(n_visits * share) if month != months[-1][0] else n_visits - done
        counts, seen, marks, pending = collections.Counter(), set(), [], []
        for _ in range(n_month):
            st = docs[bisect.bisect_left(popularity, rng.random() * popularity[-1])]
            county = st["region_code"]
            user = rider(county, rng.randrange(riders[county] * RIDERS_PER_STATION), users)
            visit = domain.visit_doc("seed-v-%08d" % next(seq), st, user, visit_time(rng, start, end))
            pending.append(visit)
            for key in domain.counter_keys(domain.visited_data(visit)):
                counts[(key, "visits")] += 1
                if (key, user) not in seen:
                    seen.add((key, user))
                    counts[(key, "visitors")] += 1
                    if month == months[-1][0]:  # only this month's marks can still decide a count
                        marks.append({"_id": "%s|%s|%s" % (key, month, user), "month": month})
            if len(pending) >= batch:
                store.insert_many(db.visits, pending)
                bar.add(len(pending))
                done += len(pending)
                pending = []
        store.insert_many(db.visits, pending)
        bar.add(len(pending))
        done += len(pending)
        store.add_counters(db, {"%s|%s" % (key, month): {"visits": counts[(key, "visits")],
                                                         "visitors": counts[(key, "visitors")]}
                                for key in {k for k, _ in counts}})
        for k in range(0, len(marks), batch):
            store.insert_many(db.visitor_marks, marks[k:k + batch])
    return {"stations": n_stations, "visits": done, "months": [m for m, _, _ in months]}


def rider(county, k, users=None):
    """The id of rider ``k`` of ``county``: one of the population's ``users`` when given (a fixed, county-specific
    pick), else an id of the seed's own."""
    if users:
        return population.user_id(zlib.crc32(("%s:%d" % (county, k)).encode()) % users)
    return "seed-u-%s-%d" % (county, k)


def run(ctx):
    """The stations step of ``make seed-scale`` (``deploy.seed_scale``): 7,473 stations, and visits scaled with the
    users loaded (2.82 M at 7.5 M users), by the population's users. Done once (recorded in ``seed_scale``); an
    unfinished step starts over on emptied collections, unless the database holds stations that are not seeded."""
    db = ctx.db("stations")
    visits = round(VISITS * ctx.users / population.USERS)

    def load():
        if db.stations.find_one({"_id": {"$not": {"$regex": "^5eed"}}}, {"_id": 1}):
            print("stations: %s holds stations of its own; seed into an empty store" % db.name)
            return None
        return seed(db, STATIONS, visits, drop=True, users=ctx.users, progress=ctx.progress)
    return ctx.once(db, "stations", load)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--stations", type=int, default=STATIONS)
    ap.add_argument("--visits", type=int, default=VISITS)
    ap.add_argument("--batch", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=14)
    ap.add_argument("--drop", action="store_true", help="empty stations, visits and counters first")
    args = ap.parse_args(argv)
    db = store.open_from_env()
    if db is None:
        return 2
    print("seeding %s: %d stations, %d visits over the past 365 days" % (db.name, args.stations, args.visits), flush=True)
    if not args.drop and db.stations.find_one({"_id": seed_id(0)}, {"_id": 1}):
        print("%s holds seeded data already: run with --drop to seed it again" % db.name)
        return 1
    started = time.time()
    out = seed(db, args.stations, args.visits, args.batch, args.seed, args.drop)
    print("done in %.0fs: %s" % (time.time() - started, out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
