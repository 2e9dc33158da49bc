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

Nameko runs workers as green threads of one OS thread: the bookkeeping here needs no lock (nothing in it yields
except the waits).
"""
import eventlet
from eventlet.event import Event
from nameko.extensions import DependencyProvider

_LEAD = object()


class _Ticket:
    __slots__ = ("item", "run", "event")

    def __init__(self, item, run):
        self.item, self.run = item, run
        self.event = Event()


class GroupCommit:
    def __init__(self, run, window=0.002, max_size=64):
        self.run = run
        self.window = window
        self.max_size = max_size
        self._pending = {}  # key -> [ticket] waiting for a batch
        self._leading = set()  # keys with a leader
        self.batches = 0  # statistics (for logs, metrics and tests)
        self.items = 0

    def submit(self, key, item, run=None):
        """``item``'s outcome; ``run`` (else the constructor's) is what runs a batch this request leads."""
        ticket = _Ticket(item, run or self.run)
        self._pending.setdefault(key, []).append(ticket)
        if key not in self._leading:
            self._leading.add(key)
            if self.window:
                eventlet.sleep(self.window)
            self._lead(key, ticket)
        while True:
            outcome = ticket.event.wait()
            if outcome is _LEAD:
                ticket.event = Event()
                self._lead(key, ticket)
                continue
            if isinstance(outcome, BaseException):
                raise outcome
            return outcome

    def _lead(self, key, mine):
        """Run batches of ``key`` until ``mine`` has its answer; then pass the lead on (or give it up)."""
        try:
            while not mine.event.ready():
                queue = self._pending.get(key) or []
                batch, rest = queue[:self.max_size], queue[self.max_size:]
                if rest:
                    self._pending[key] = rest
                else:
                    self._pending.pop(key, None)
                if not batch:  # cannot happen while ``mine`` waits; kept so a bug cannot spin
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
                waiting[0].event.send(_LEAD)
            else:
                self._leading.discard(key)



class Batcher(DependencyProvider):
    """A nameko dependency: one ``GroupCommit`` per container (so per process), shared by its workers.

    ``claims = Batcher(window_ms=2)``; in an entrypoint: ``self.claims.submit(key, item, run)``, where ``run`` is the
    calling worker's own ``decide_and_write`` (a leader runs the batch with its own worker's dependencies)."""

    def __init__(self, window_ms=2.0, max_size=64):
        self.window_ms, self.max_size = window_ms, max_size
        self.group = None

    def setup(self):
        self.group = GroupCommit(None, window=self.window_ms / 1000.0, max_size=self.max_size)

    def get_dependency(self, worker_ctx):
        return self.group
