"""Group commit: requests that arrive within a few milliseconds of each other, in one process, are decided and written
together, and each still gets its own answer.

    claims = GroupCommit(decide_and_write, window=0.002, max_size=64)
    answer = claims.submit(campaign_id, item)   # in a nameko worker (a green thread)

``decide_and_write(key, items)`` returns one outcome per item, in order: a result, or an exception *instance*, which
``submit`` raises in that item's worker. If it raises, every item of the batch gets that exception.

How a batch forms: the first request for a key becomes the *leader*; it waits ``window`` seconds for others to join,
then runs the batch. Requests arriving while a batch of their key is being written wait for the next one, so under
load a batch holds whatever arrived during the previous commit (the batch grows with the load; alone, a request
waits only ``window``). When the leader has its own answer it hands the lead to the oldest waiting request instead
of serving later batches itself, so no request waits for more than its own batch and the one before.

``lanes`` (default 1): how many batches of one key may be on their way at once. A further lane opens only under
load: when ``lane_at`` requests are waiting while every open lane is busy, the request that makes them ``lane_at``
leads a batch of them at once; and (``lane_wait`` seconds) a request that has waited that long in the queue leads a
batch of itself and those behind it, so that a slow batch on its way does not hold a few requests back for long.
The gateway runs its claims in lanes (``gateway.routes.benefits``): one batch travels to benefits (and is written
there) while the next forms, and with two benefits replicas batches are written side by side. A request handed the
lead leaves the queue as it is handed it (the first of the batch it then runs), so two leaders never take the same
request.

Nameko runs workers as green threads of one OS thread: the bookkeeping here needs no lock (nothing in it yields
except the waits).
"""
import eventlet
from eventlet.event import Event
from nameko.extensions import DependencyProvider

_LEAD = object()


class _Ticket:
    __slots__ = ("item", "run", "event", "held")

    def __init__(self, item, run):
        self.item, self.run = item, run
        self.event = Event()
        self.held = False  # handed the lead: out of the queue, first of the batch it runs


class GroupCommit:
    def __init__(self, run, window=0.002, max_size=64, lanes=1, lane_at=None, lane_wait=None):
        self.run = run
        self.window = window
        self.max_size = max_size
        self.lanes = max(1, lanes)
        self.lane_at = lane_at or max(1, max_size // 4)
        self.lane_wait = lane_wait if self.lanes > 1 else None
        self._pending = {}  # key -> [ticket] waiting for a batch
        self._leaders = {}  # key -> how many leaders it has (batches on their way, or a lead being handed on)
        self.batches = 0  # statistics (for logs, metrics and tests)
        self.items = 0

    def _enqueue(self, key, tickets):
        """Queue ``tickets``; True when the caller is to lead (no leader yet, or a further lane opens now)."""
        queue = self._pending.setdefault(key, [])
        queue.extend(tickets)
        leaders = self._leaders.get(key, 0)
        if leaders == 0 or (leaders < self.lanes and len(queue) >= self.lane_at):
            self._leaders[key] = leaders + 1
            return True
        return False

    def submit(self, key, item, run=None):
        """``item``'s outcome; ``run`` (else the constructor's) is what runs a batch this request leads."""
        ticket = _Ticket(item, run or self.run)
        if self._enqueue(key, [ticket]):
            if self.window and self._leaders[key] == 1:
                eventlet.sleep(self.window)
            self._lead(key, ticket)
        outcome = self._wait(key, ticket, self.lane_wait)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def submit_many(self, key, items, run=None, window=None):
        """The outcomes of ``items`` (in order; an exception is returned as its instance, not raised), queued
        together behind whatever of ``key`` is waiting: a batch formed upstream (the gateway's claims of one
        campaign) stays one batch here, merged with others that arrive meanwhile. ``window`` (default: none, the
        caller already waited for its batch to form) is how long a new leader waits for others to join."""
        if not items:
            return []
        tickets = [_Ticket(item, run or self.run) for item in items]
        if self._enqueue(key, tickets):
            if window:
                eventlet.sleep(window)
            self._lead(key, tickets[-1])  # batches run from the front: the last answered means all are
        return [self._wait(key, t) for t in tickets]

    def _wait(self, key, ticket, open_after=None):
        """``ticket``'s outcome; when the lead is handed to it, run batches (``_lead``) until it has one. With
        ``open_after`` (seconds): a request still waiting in the queue that long opens a lane if one is free."""
        while True:
            outcome = ticket.event.wait(open_after)
            if open_after is not None:
                open_after = None
                if not ticket.event.ready():
                    self._open_lane(key, ticket)
                    continue
                # sent as the wait timed out: the timer's wake-up may have come first, with None
                outcome = ticket.event.wait()
            if outcome is _LEAD:
                ticket.event = Event()
                self._lead(key, ticket)
                continue
            return outcome

    def _open_lane(self, key, ticket):
        """``ticket`` has waited ``lane_wait``: if it is still queued and a lane is free, it leads a batch now
        (itself first, then whatever waits behind it)."""
        queue = self._pending.get(key)
        if not queue or ticket not in queue or self._leaders.get(key, 0) >= self.lanes:
            return
        queue.remove(ticket)
        if not queue:
            self._pending.pop(key, None)
        ticket.held = True
        self._leaders[key] = self._leaders.get(key, 0) + 1
        self._lead(key, ticket)

    def _lead(self, key, mine):
        """Run batches of ``key`` until ``mine`` has its answer (another lane's leader may answer it); then pass
        the lead on to the oldest waiting request (or give it up)."""
        try:
            while not mine.event.ready():
                queue = self._pending.get(key) or []
                if mine.held:
                    mine.held = False
                    queue = [mine] + queue
                batch, rest = queue[:self.max_size], queue[self.max_size:]
                if rest:
                    self._pending[key] = rest
                else:
                    self._pending.pop(key, None)
                if not batch:  # ``mine`` is in another lane's batch
                    break
                try:
                    outcomes = mine.run(key, [t.item for t in batch])
                    if len(outcomes) != len(batch):
                        raise RuntimeError("a batch of %d got %d outcomes" % (len(batch), len(outcomes)))
                except Exception as exc:  # noqa: BLE001  (each request of the batch gets it)
                    outcomes = [exc] * len(batch)
                self.batches += 1
                self.items += len(batch)
                for t, outcome in zip(batch, outcomes):
                    t.event.send(outcome)
        finally:
            waiting = self._pending.get(key)
            if waiting:
                heir = waiting.pop(0)
                if not waiting:
                    self._pending.pop(key, None)
                heir.held = True
                heir.event.send(_LEAD)
            elif self._leaders.get(key, 0) > 1:
                self._leaders[key] -= 1
            else:
                self._leaders.pop(key, None)


class Batcher(DependencyProvider):
    """A nameko dependency: one ``GroupCommit`` per container (so per process), shared by its workers.

    ``claims = Batcher(window_ms=2)``; in an entrypoint: ``self.claims.submit(key, item, run)``, where ``run`` is the
    calling worker's own ``decide_and_write`` (a leader runs the batch with its own worker's dependencies)."""

    def __init__(self, window_ms=2.0, max_size=64, lanes=1, lane_at=None, lane_wait_ms=None):
        self.window_ms, self.max_size, self.lanes, self.lane_at = window_ms, max_size, lanes, lane_at
        self.lane_wait = lane_wait_ms / 1000.0 if lane_wait_ms else None
        self.group = None

    def setup(self):
        self.group = GroupCommit(None, window=self.window_ms / 1000.0, max_size=self.max_size, lanes=self.lanes,
                                 lane_at=self.lane_at, lane_wait=self.lane_wait)

    def get_dependency(self, worker_ctx):
        return self.group
