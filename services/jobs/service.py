"""The jobs service: employers, postings and their search, resumes, applications, job fairs and booths, job alerts.

RPC methods take the caller as ``actor`` (``gateway.auth.Principal.as_actor()``) and validate their payload with the
schemas the gateway uses. Every state change that announces an event writes it to the outbox in the same
transaction. A timer closes postings whose ``valid_until`` has passed (``job_closed`` reason ``expired``); job
alerts are matched from this service's own ``job_posted`` events, and the masked phone employers see comes from
membership's ``member_joined`` events (no call into membership per application).
"""

from unionhub_kit import clock, events, idempotency, projection
from unionhub_kit.actors import require_employer, require_scope
from unionhub_kit.config import timer
from unionhub_kit.consumer import idempotent, on_event
from unionhub_kit.errors import Conflict, Forbidden, NotFound
from unionhub_kit.metrics import ServiceMetrics
from unionhub_kit.mongo import Mongo, transaction
from unionhub_kit.outbox import Outbox
from unionhub_kit.ping import ping as _ping
from unionhub_kit.rpc import rpc
from unionhub_kit.schema import load

from . import domain, schemas, search, store
from .domain import must

EXPIRY_BATCH = 200


def _page(items, next_key):
    return {"items": items, "next_cursor": search.encode_cursor(next_key) if next_key else None}


class JobsService:
    name = "jobs"
    db = Mongo(indexes=store.ensure_indexes)
    outbox = Outbox()
    metrics = ServiceMetrics()  # latency histograms, access log with the request id

    @rpc
    def ping(self):
        return _ping(self.name, self.db)

    # ---- employers ------------------------------------------------------------------------------------------
    @rpc
    def create_employer(self, actor, payload, idempotency_key=None):
        p = load(schemas.EmployerCreate, payload)
        require_scope(actor, p["region_code"])
        doc = dict(p, _id=store.new_id(), created_at=clock.now(), created_by=actor["sub"])

        def txn(session):
            store.insert_employer(self.db, doc, session)
            return domain.employer_view(doc)
        return store.run_idempotent(self.db, idempotency.scope("create_employer", actor["sub"]), idempotency_key, p, txn)

    @rpc
    def get_employer(self, employer_id):
        return domain.employer_view(must(store.employer(self.db, employer_id), "employer"))

    # ---- postings -------------------------------------------------------------------------------------------
    @rpc
    def create_job(self, actor, payload, idempotency_key=None):
        employer_id = require_employer(actor)
        p = load(schemas.JobCreate, payload)
        employer = store.employer(self.db, employer_id)
        if employer is None:
            raise Forbidden("Your employer account has no employer record.", code="NOT_AN_EMPLOYER")
        now = clock.now()
        job_id = store.new_id()
        doc = dict(p, _id=job_id, employer_id=employer_id, employer_name=employer["name"], status="open",
                   created_at=now, order_key=search.order_key(store.now_ms(now), job_id), applications=0)
        doc["search_keys"] = search.search_keys(doc)

        def txn(session):
            store.insert_job(self.db, doc, session)
            self.outbox.add(session, "job_posted", domain.posted_data(doc), subject=job_id)
            return domain.posting_view(doc, now, full=True)
        result = store.run_idempotent(self.db, idempotency.scope("create_job", actor["sub"]), idempotency_key, p, txn)
        if result["id"] == job_id:
            store.bump_stats(self.db, doc["search_keys"], 1, created_ms=store.now_ms(now))
        return result

    @rpc
    def get_job(self, job_id):
        return domain.posting_view(must(store.job(self.db, job_id), "posting"), clock.now(), full=True)

    @rpc
    def search_jobs(self, payload):
        p = load(schemas.JobSearch, payload)
        flt = {"tokens": search.query_tokens(p["q"]) if p.get("q") else [], "region_code": p.get("region_code"),
               "category": p.get("category"), "salary_min": p.get("salary_min")}
        now = clock.now()
        docs, next_key = store.search_jobs(self.db, flt, p["limit"], p["cursor"], now)
        return _page([domain.posting_view(d, now) for d in docs], next_key)

    @rpc
    def close_job(self, actor, job_id):
        employer_id = require_employer(actor)
        now = clock.now()
        self._close(job_id, employer_id, "closed", now)
        doc = must(store.job(self.db, job_id), "posting")
        if doc["employer_id"] != employer_id:
            raise domain.not_owner()
        return domain.posting_view(doc, now, full=True)

    def _close(self, job_id, employer_id, reason, now):
        """Close an open posting (of ``employer_id``, when given) with its ``job_closed`` in one transaction, then
        take it out of the search counts; 1 if this call closed it, else 0."""
        def txn(session):
            before = store.close_job(self.db, job_id, employer_id, reason, now, session)
            if before is not None:
                self.outbox.add(session, "job_closed", domain.closed_data(before, reason), subject=job_id)
            return before
        before = transaction(self.db, txn)
        if before is None:
            return 0
        store.bump_stats(self.db, before["search_keys"], -1)
        return 1

    @rpc
    def employer_jobs(self, actor, payload):
        employer_id = require_employer(actor)
        p = load(schemas.Page, payload)
        now = clock.now()
        docs, next_key = store.employer_jobs(self.db, employer_id, p["limit"], p["cursor"])
        return _page([domain.posting_view(d, now) for d in docs], next_key)

    @timer("JOBS_EXPIRY_INTERVAL")
    def expire_postings(self):
        """Close every posting whose ``valid_until`` has passed (conditional: replicas never close one twice)."""
        closed = 0
        while True:
            now = clock.now()
            due = store.due_for_expiry(self.db, now, EXPIRY_BATCH)
            for job_id in due:
                closed += self._close(job_id, None, "expired", now)
            if len(due) < EXPIRY_BATCH:
                return closed

    # ---- resumes --------------------------------------------------------------------------------------------
    @rpc
    def put_resume(self, actor, payload):
        p = load(schemas.Resume, payload)
        return domain.resume_view(store.put_resume(self.db, actor["sub"], p, clock.now()))

    @rpc
    def get_resume(self, actor):
        return domain.resume_view(must(store.resume(self.db, actor["sub"]), "resume"))

    # ---- applications ---------------------------------------------------------------------------------------
    @rpc
    def apply(self, actor, job_id, idempotency_key=None):
        user_id = actor["sub"]
        if not store.has_resume(self.db, user_id):
            raise Conflict("Put your resume first (PUT /api/v1/members/me/resume).", code="RESUME_REQUIRED")
        now = clock.now()
        app_id = store.new_id()

        def txn(session):
            job = store.claim_for_application(self.db, job_id, now, session)
            if job is None:
                must(store.job(self.db, job_id, {"_id": 1}), "posting")
                raise domain.closed(job_id)
            doc = {"_id": app_id, "job_id": job_id, "user_id": user_id, "employer_id": job["employer_id"],
                   "employer_name": job["employer_name"], "job_title": job["title"], "status": "submitted",
                   "history": [{"status": "submitted", "at": now}], "created_at": now, "updated_at": now,
                   "order_key": search.order_key(store.now_ms(now), app_id)}
            store.insert_application(self.db, doc, session)
            self.outbox.add(session, "application_submitted", domain.submitted_data(doc), subject=app_id)
            return {"id": app_id, "job_id": job_id, "job_title": job["title"], "status": "submitted",
                    "created_at": events.rfc3339(now)}
        return store.run_idempotent(self.db, idempotency.scope("apply", user_id), idempotency_key, {"apply": job_id}, txn)

    @rpc
    def my_applications(self, actor, payload):
        p = load(schemas.Page, payload)
        docs, next_key = store.member_applications(self.db, actor["sub"], p["limit"], p["cursor"])
        return _page([domain.member_application_view(d) for d in docs], next_key)

    @rpc
    def employer_applications(self, actor, payload):
        employer_id = require_employer(actor)
        p = load(schemas.EmployerApplications, payload)
        if p.get("job_id"):
            job = must(store.job(self.db, p["job_id"], {"employer_id": 1}), "posting")
            if job["employer_id"] != employer_id:
                raise domain.not_owner()
        docs, next_key = store.employer_applications(self.db, employer_id, p.get("job_id"), p.get("status"),
                                                     p["limit"], p["cursor"])
        resumes, members = store.applicants(self.db, [d["user_id"] for d in docs])
        return _page([domain.employer_application_view(d, resumes.get(d["user_id"]), members.get(d["user_id"]))
                      for d in docs], next_key)

    @rpc
    def set_application_status(self, actor, application_id, payload):
        employer_id = require_employer(actor)
        target = load(schemas.StatusChange, payload)["status"]
        now = clock.now()

        def txn(session):
            doc = store.move_application(self.db, application_id, employer_id, target, now, session)
            if doc is not None:
                self.outbox.add(session, "application_status_changed", domain.status_changed_data(doc, target),
                                subject=application_id)
            return doc
        doc = transaction(self.db, txn)
        if doc is None:
            doc = must(store.application(self.db, application_id), "application")
            if doc["employer_id"] != employer_id:
                raise domain.not_owner()
            if doc["status"] != target:
                raise domain.transition_refused(doc["status"], target)
        return {"id": application_id, "job_id": doc["job_id"], "job_title": doc["job_title"],
                "status": doc["status"], "updated_at": events.rfc3339(doc["updated_at"])}

    # ---- job fairs ------------------------------------------------------------------------------------------
    @rpc
    def create_fair(self, actor, payload, idempotency_key=None):
        p = load(schemas.FairCreate, payload)
        require_scope(actor, p["region_code"])
        now = clock.now()
        fair_id = store.new_id()
        doc = dict(p, _id=fair_id, region_prefixes=search.region_prefixes(p["region_code"]), booth_count=0,
                   created_at=now, created_by=actor["sub"],
                   order_key=search.order_key(store.now_ms(p["starts_at"]), fair_id))

        def txn(session):
            store.insert_fair(self.db, doc, session)
            self.outbox.add(session, "fair_scheduled", domain.fair_scheduled_data(doc), subject=fair_id)
            return domain.fair_view(doc)
        return store.run_idempotent(self.db, idempotency.scope("create_fair", actor["sub"]), idempotency_key, p, txn)

    @rpc
    def add_booth(self, actor, fair_id, payload, idempotency_key=None):
        """A booth for the caller's employer, with its own open postings."""
        employer_id = require_employer(actor)
        p = load(schemas.BoothCreate, payload)
        fair = must(store.fair(self.db, fair_id), "fair")
        jobs = store.jobs_by_ids(self.db, p["job_ids"])
        missing = [j for j in p["job_ids"] if j not in jobs]
        if missing:
            raise NotFound("No such posting: %s." % ", ".join(missing))
        if any(j["employer_id"] != employer_id for j in jobs.values()):
            raise domain.not_owner()
        now = clock.now()
        shut = [j["_id"] for j in jobs.values() if j["status"] != "open" or j["valid_until"] <= now]
        if shut:
            raise domain.closed(", ".join(shut))
        employer = store.employer(self.db, employer_id) or {}
        doc = {"_id": store.new_id(), "fair_id": fair_id, "employer_id": employer_id,
               "employer_name": employer.get("name"), "job_ids": p["job_ids"], "created_at": now}

        def txn(session):
            if not store.insert_booth(self.db, doc, now, session):
                raise Conflict("Fair %s has ended." % fair_id, code="FAIR_ENDED")
            return {"id": doc["_id"], "fair_id": fair_id, "employer_id": employer_id, "job_ids": p["job_ids"],
                    "created_at": events.rfc3339(now)}
        return store.run_idempotent(self.db, idempotency.scope("add_booth", actor["sub"]), idempotency_key,
                                    dict(p, fair_id=fair["_id"]), txn)

    @rpc
    def list_fairs(self, payload):
        p = load(schemas.FairList, payload)
        docs, next_key = store.list_fairs(self.db, p.get("region_code"), p["upcoming"], p["limit"], p["cursor"],
                                          clock.now())
        return _page([domain.fair_view(d) for d in docs], next_key)

    @rpc
    def get_fair(self, fair_id):
        """A fair with its employers and each one's postings (as they stand now)."""
        fair = domain.fair_view(must(store.fair(self.db, fair_id), "fair"))
        booths = store.booths(self.db, fair_id)
        jobs = store.jobs_by_ids(self.db, {j for b in booths for j in b["job_ids"]})
        now = clock.now()
        fair["employers"] = [{"employer_id": b["employer_id"], "employer_name": b.get("employer_name"),
                              "postings": [domain.posting_view(jobs[j], now) for j in b["job_ids"] if j in jobs]}
                             for b in booths]
        return fair

    # ---- job alerts -----------------------------------------------------------------------------------------
    @rpc
    def put_job_alert(self, actor, payload):
        p = load(schemas.JobAlert, payload)
        conditions = domain.alert_conditions(p["region_codes"], p["categories"], p["keywords"])
        return domain.alert_view(store.put_alert(self.db, actor["sub"], conditions, clock.now()))

    @rpc
    def get_job_alert(self, actor):
        return domain.alert_view(must(store.alert(self.db, actor["sub"]), "job alert"))

    @rpc
    def delete_job_alert(self, actor):
        if not store.delete_alert(self.db, actor["sub"]):
            raise NotFound("No such job alert.")

    @on_event("jobs", "job_posted")
    @idempotent
    def on_job_posted(self, event, session):
        """Match the new posting against the job alerts; announce the members to tell (``job_alert_matched``)."""
        data = event["data"]
        job = store.job(self.db, data["job_id"], {"search_keys": 1})
        if not job or not job.get("search_keys"):
            return  # closed before its alerts were matched: nobody is told of a closed posting
        user_ids = sorted(a["_id"] for a in store.alert_candidates(self.db, job["search_keys"], session)
                          if domain.alert_matches(a, job["search_keys"]))
        for chunk in domain.chunks(user_ids):
            self.outbox.add(session, "job_alert_matched", domain.alert_matched_data(data, chunk),
                            subject=data["job_id"])

    # ---- the member projection (masked phone for employers; erasure) ----------------------------------------
    @on_event("membership", "member_joined")
    @idempotent
    def on_member_joined(self, event, session):
        d = event["data"]
        store.project_member(self.db, d["user_id"], {"member_id": d["member_id"], "phone_masked": d["phone_masked"]},
                             projection.event_time(event), session)

    @on_event("membership", "member_left")
    @idempotent
    def on_member_left(self, event, session):
        d = event["data"]
        if d["erased"]:
            store.erase_member(self.db, d["user_id"], session)
        else:
            store.project_member(self.db, d["user_id"], {"member_id": d["member_id"], "status": "left"},
                                 projection.event_time(event), session)
