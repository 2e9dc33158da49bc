"""Each stations process keeps every station in memory, filed by grid cell (``geo.cell_keys``) and by code, for the
searches (nearest first, and by code).

Why: the store returns a station document in ~0.2 ms (the embedded store is Python; a 3 km Chengdu query fetches
~40 of them: 10 ms, 20x a point lookup, more under load), and all 7,473 stations are ~10 MB. Fresh: every station
write takes the next revision number in its transaction (``store.next_revs``); before each search the index reads
the current number (one point lookup) and, when it moved, fetches the stations written since (indexed on ``rev``).
So a search sees every write committed before it started, on any replica, at the cost of one point lookup.
"""
import bisect
import threading

from nameko.extensions import DependencyProvider

from . import domain, store


class StationIndex:
    def __init__(self):
        self.rev = 0
        self.docs = {}  # station id -> document
        self.cells = {}  # cell key -> {station id}
        self.codes = []  # sorted (code, station id); rebuilt after a sync that changed something
        self.lock = threading.Lock()  # green under eventlet

    def sync(self, db):
        """Bring the copy up to the store's current revision."""
        current = store.current_rev(db)
        if current <= self.rev:
            return
        with self.lock:
            if current <= self.rev:
                return
            for doc in store.stations_since(db, self.rev):
                self.put(doc)
                current = max(current, doc.get("rev", 0))
            self.codes = sorted((d["code"], i) for i, d in self.docs.items())
            self.rev = current

    def put(self, doc):
        old = self.docs.get(doc["_id"])
        if old is not None:
            for key in old["cells"]:
                self.cells.get(key, set()).discard(doc["_id"])
        self.docs[doc["_id"]] = doc
        for key in doc["cells"]:
            self.cells.setdefault(key, set()).add(doc["_id"])

    def in_cells(self, keys):
        """The stations in the cells ``keys`` (what ``store.stations_in_cells`` answers, from memory)."""
        return [self.docs[i] for key in keys for i in self.cells.get(key, ())]

    def by_code(self, db, flt, now, limit, after=None):
        """Up to ``limit + 1`` matching stations in code order after the code ``after``."""
        self.sync(db)
        codes = self.codes
        out = []
        for _, station_id in codes[bisect.bisect_right(codes, (after, "~")) if after else 0:]:
            doc = self.docs[station_id]
            if domain.matches(doc, flt, now):
                out.append(doc)
                if len(out) > limit:
                    break
        return out

    def nearest(self, db, lat, lng, radius_m, flt, now, limit, after=None):
        self.sync(db)
        return domain.nearest(self.in_cells, lat, lng, radius_m, flt, now, limit, after)


class NearbyIndex(DependencyProvider):
    """Injects the container's ``StationIndex`` (one per process, shared by its workers)."""

    def setup(self):
        self.index = StationIndex()

    def get_dependency(self, worker_ctx):
        return self.index
