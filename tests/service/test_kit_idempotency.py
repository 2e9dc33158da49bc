"""unionhub_kit.idempotency.run_idempotent against the real store: first answer wins, replays, races."""
import pytest

from unionhub_kit import idempotency
from unionhub_kit.errors import AppError, Conflict


@pytest.fixture
def db(db_of):
    return db_of("kit_idem")


def test_same_key_returns_first_result_and_runs_once(db):
    calls = []

    def work(session):
        calls.append(1)
        db.things.insert_one({"n": len(calls)}, session=session)
        return {"n": len(calls)}
    first = idempotency.run_idempotent(db, "u1", "k1", {"a": 1}, work)
    again = idempotency.run_idempotent(db, "u1", "k1", {"a": 1}, work)
    assert first == again == {"n": 1}
    assert len(calls) == 1 and db.things.count_documents({}) == 1


def test_same_key_other_body_is_refused(db):
    idempotency.run_idempotent(db, "u1", "k2", {"a": 1}, lambda s: {"ok": 1})
    with pytest.raises(AppError) as err:
        idempotency.run_idempotent(db, "u1", "k2", {"a": 2}, lambda s: {"ok": 2})
    assert err.value.code == "IDEMPOTENCY_KEY_REUSED" and err.value.status == 422


def test_a_refusal_without_a_winner_is_raised(db):
    def refuse(session):
        raise Conflict("No.", code="NOPE")
    with pytest.raises(Conflict):
        idempotency.run_idempotent(db, "u3", "k4", {}, refuse)
    assert db.idempotency.find_one({"_id": "u3|k4"}) is None  # nothing half-written
