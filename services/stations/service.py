"""The stations service: outdoor-worker service stations (户外劳动者服务站点), nearest-first search, check-ins by
poster code, and visit statistics.

RPC methods take the caller as ``actor`` (``gateway.auth.Principal.as_actor()``) and validate their payload with the
schemas the gateway uses. Creating, closing and reopening a station write ``station_opened`` / ``station_closed`` to
the outbox in the same transaction (with the open-station counters of its regions); a check-in writes its visit and
``station_visited``. This service counts visits from its own ``station_visited`` events (idempotent: a redelivered
event counts once), so statistics read counters, never scan visits.
"""
from nameko.timer import timer

from unionhub_kit import clock, idempotency, paging
from unionhub_kit.consumer import idempotent, on_event
from unionhub_kit.errors import ServiceUnavailable
from unionhub_kit.metrics import ServiceMetrics
from unionhub_kit.mongo import Mongo, transaction
from unionhub_kit.outbox import Outbox
from unionhub_kit.ping import ping as _ping
from unionhub_kit.rpc import rpc
from unionhub_kit.schema import load

from . import domain, schemas, store
from .index import NearbyIndex

MARKS_INTERVAL = 3600


class StationsService:
    name = "stations"
    db = Mongo(indexes=store.ensure_indexes)
    outbox = Outbox()
    index = NearbyIndex()  # every station in memory, by grid cell, synced by revision before each search
    metrics = ServiceMetrics()  # latency histograms, access log with the request id

    @rpc
    def ping(self):
        return _ping(self.name, self.db)

    # ---- stations -------------------------------------------------------------------------------------------
    @rpc
    def create_station(self, actor, payload, idempotency_key=None):
        p = load(schemas.StationCreate, payload)
        domain.require_scope(actor, p["region_code"])
        domain.check_location(p["region_code"], p["location"])
        now = clock.now()
        station_id = store.new_id()

        def txn(session):
            doc = domain.station_doc(station_id, dict(p, code=domain.new_code()), now, actor["sub"])
            doc["rev"] = store.next_revs(self.db, 1, session)
            store.insert_station(self.db, doc, session)
            store.bump_open(self.db, domain.open_deltas(None, doc), session)
            self.outbox.add(session, "station_opened", domain.opened_data(doc), subject=station_id)
            return domain.station_view(doc, now)
        for _ in range(store.CODE_ATTEMPTS):
            try:
                return idempotency.run_idempotent(self.db, idempotency.scope("create_station", actor["sub"]),
                                                  idempotency_key, p, txn)
            except store.CodeTaken:
                continue  # another station drew that code: draw again
        raise RuntimeError("no free poster code after %d draws" % store.CODE_ATTEMPTS)

    @rpc
    def update_station(self, actor, station_id, payload):
        p = load(schemas.StationPatch, payload)
        current = domain.must(store.station(self.db, station_id), "station")
        domain.require_scope(actor, current["region_code"])
        if "region_code" in p:
            domain.require_scope(actor, p["region_code"])
        if "region_code" in p or "location" in p:
            domain.check_location(p.get("region_code", current["region_code"]),
                                  p.get("location", current["location"]))
        now = clock.now()

        def txn(session):
            before = domain.must(store.station(self.db, station_id, session), "station")
            after = domain.with_place(dict(before, **p))
            changes = {k: after[k] for k in list(p) + ["cells", "prefecture_code"]}
            changes["rev"] = store.next_revs(self.db, 1, session)
            store.update_station(self.db, station_id, changes, now, session)
            store.bump_open(self.db, domain.open_deltas(before, after), session)
            if before["status"] != after["status"] and after["status"] == "open":
                self.outbox.add(session, "station_opened", domain.opened_data(after), subject=station_id)
            elif before["status"] != after["status"]:
                self.outbox.add(session, "station_closed", domain.closed_data(after), subject=station_id)
            return domain.station_view(dict(after, updated_at=now), now)
        return transaction(self.db, txn)

    @rpc
    def get_station(self, station_id):
        doc = domain.must(store.station(self.db, station_id), "station")
        now = clock.now()
        counted = store.month_counters(self.db, [station_id], domain.month_of(now)).get(station_id) or {}
        return domain.station_view(doc, now, visits_this_month=counted.get("visits", 0))

    @rpc
    def search_stations(self, payload):
        p = load(schemas.StationSearch, payload)
        now = clock.now()
        if p.get("near"):
            return self._nearest(p, now)
        after = paging.decode_cursor(p["cursor"], domain.CODE_KEY_PATTERN)
        found = [domain.station_view(doc, now) for doc in self.index.by_code(self.db, p, now, p["limit"], after)]
        return paging.page(found, p["limit"], lambda item: item["code"])

    def _nearest(self, p, now):
        lat, lng = schemas.parse_near(p["near"])
        after = p["cursor"] and domain.parse_distance_key(
            paging.decode_cursor(p["cursor"], domain.DISTANCE_KEY_PATTERN))
        hits = self.index.nearest(self.db, lat, lng, p.get("radius_m", schemas.DEFAULT_RADIUS_M), p, now,
                                  p["limit"], after or None)
        items = [domain.station_view(doc, now, distance_m=mm / 1000) for mm, doc in hits]
        keys = {item["id"]: domain.distance_cursor_key(mm, doc["_id"]) for (mm, doc), item in zip(hits, items)}
        return paging.page(items, p["limit"], lambda item: keys[item["id"]])

    # ---- check-ins ------------------------------------------------------------------------------------------
    @rpc
    def check_in(self, actor, code):
        """``{"visit": ..., "created": bool}``: a new visit, or the member's visit here less than 30 minutes ago."""
        user_id = actor["sub"]
        normalized = domain.normalize_code(code)
        station = domain.must(normalized and store.station_by_code(self.db, normalized), "station with this code")
        if station["status"] != "open":
            raise domain.closed(station["code"])
        now = clock.now()
        visit = domain.visit_doc(store.new_id(), station, user_id, now)

        def txn(session):
            store.claim_window(self.db, user_id, station["_id"], visit["_id"], now, now - domain.VISIT_WINDOW,
                               session)
            store.insert_visit(self.db, visit, session)
            self.outbox.add(session, "station_visited", domain.visited_data(visit), subject=station["_id"])
            return domain.visit_view(visit)
        for _ in range(3):
            try:
                return {"visit": transaction(self.db, txn), "created": True}
            except store.InWindow:
                earlier = store.last_visit(self.db, user_id, station["_id"])
                if earlier is not None:  # (None: the window's winner is not visible yet: ask again)
                    return {"visit": domain.visit_view(earlier), "created": False}
        raise ServiceUnavailable("Your check-in is being recorded; try again.")

    @on_event("stations", "station_visited")
    @idempotent
    def on_station_visited(self, event, session):
        d = event["data"]
        store.count_visit(self.db, domain.counter_keys(d), d["month"], d["user_id"], session)

    @timer(interval=MARKS_INTERVAL)
    def forget_old_marks(self):
        """Visitor marks of months before last month decide nothing any more (late events of last month still
        find theirs)."""
        return store.forget_marks_before(self.db, domain.previous_month(clock.now()))

    # ---- statistics -----------------------------------------------------------------------------------------
    @rpc
    def stats(self, actor, payload):
        p = load(schemas.StatsQuery, payload)
        if (actor or {}).get("role") != "union_admin":
            domain.require_scope(actor, "51")
        month = p.get("month") or domain.month_of(clock.now())
        codes = domain.stats_groups(p["group_by"], actor.get("scope"))
        whole = domain.scope_region(actor.get("scope"))
        keys = ["r:" + c for c in codes + ([whole] if whole else [])]
        counted = store.month_counters(self.db, keys, month)
        opened = store.open_counts(self.db, codes + ([whole] if whole else []))
        items = [domain.stats_item(code, opened.get(code, 0), counted.get("r:" + code) or {}) for code in codes]
        total = whole and domain.stats_item(whole, opened.get(whole, 0), counted.get("r:" + whole) or {})
        return {"group_by": p["group_by"], "month": month, "scope": actor.get("scope"), "items": items,
                "total": total}
