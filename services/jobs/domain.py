"""Rules of the employment platform, free of broker and store: vocabularies, the application status flow, what an
employer may see of an applicant, and job-alert matching."""

from unionhub_kit import regions
from unionhub_kit.actors import require_employer  # noqa: F401
from unionhub_kit.errors import Conflict, Forbidden, NotFound
from unionhub_kit.events import rfc3339

from . import search
from .schemas import (  # noqa: F401  (the contract's values, validated at the gateway too)
    CATEGORIES, EDUCATION, EMPLOYER_SIZES, FAIR_KINDS, FLOW, APPLICATION_STATUSES, TARGET_STATUSES,
    MAX_VALIDITY_DAYS, MAX_BOOTH_POSTINGS, contains_id_number)

FINAL = ("offer", "rejected")
ALERT_CHUNK = 500


def sources_for(target):
    """The statuses an application may move to ``target`` from (forward along the flow; reject before a decision)."""
    if target == "rejected":
        return [s for s in FLOW if s not in FINAL]
    return list(FLOW[:FLOW.index(target)])


def transition_refused(current, target):
    return Conflict("An application that is %s cannot move to %s." % (current, target), code="INVALID_TRANSITION")


def must(doc, what):
    """``doc``, or 404 when it is None."""
    if doc is None:
        raise NotFound("No such %s." % what)
    return doc


def not_owner():
    return Forbidden("That belongs to another employer.", code="NOT_OWNER")


def closed(job_id):
    return Conflict("Posting %s is closed." % job_id, code="CLOSED")


def applicant_view(resume, member):
    """What an employer sees of an applicant: the resume and the masked phone, never an ID number or full phone."""
    view = {k: (resume or {}).get(k) for k in ("name", "education", "experience_years", "skills",
                                                "desired_categories", "desired_region_codes", "summary")}
    view["phone_masked"] = (member or {}).get("phone_masked")
    return view


# ---- job alerts -----------------------------------------------------------------------------------------------
def alert_conditions(region_codes, categories, keywords):
    """An alert as stored: its dimensions, each keyword's tokens, and the anchor keys it is looked up by.

    Dimensions combine with AND, values inside one with OR; an empty dimension does not restrict, and neither does
    the province (``51``: every posting is in it). The anchors are the values of one dimension a matching posting
    must carry among its search keys (regions first, the most selective; ``*`` when nothing restricts), so a new
    posting finds its candidate alerts with one indexed ``$in``.
    """
    keyword_tokens = [search.query_tokens(k) for k in keywords]
    if region_codes and not any(_province(r) for r in region_codes):
        anchors = ["r:" + r for r in region_codes]
    elif categories:
        anchors = ["c:" + c for c in categories]
    elif keywords:
        anchors = sorted({"w:" + t[0] for t in keyword_tokens if t})
    else:
        anchors = ["*"]
    return {"region_codes": region_codes, "categories": categories, "keywords": keywords,
            "keyword_tokens": keyword_tokens, "anchors": anchors}


def _province(prefix):
    return len(prefix) == 2


def alert_matches(alert, posting_keys):
    """Whether a posting with ``posting_keys`` (its search keys) satisfies an alert."""
    have = set(posting_keys)
    if alert["region_codes"] and not any(_province(r) or "r:" + r in have for r in alert["region_codes"]):
        return False
    if alert["categories"] and not any("c:" + c in have for c in alert["categories"]):
        return False
    if alert["keywords"] and not any(t and all("w:" + x in have for x in t) for t in alert["keyword_tokens"]):
        return False
    return True


def chunks(values, size=ALERT_CHUNK):
    return [values[i:i + size] for i in range(0, len(values), size)]


# ---- views (JSON-safe answers) --------------------------------------------------------------------------------
POSTING_FIELDS = ("employer_id", "employer_name", "title", "category", "region_code", "address", "salary_min",
                  "salary_max", "headcount", "education", "experience_years")


def posting_view(doc, now, full=False):
    """A posting (``full``: with its description; lists leave it out). One past its ``valid_until`` reads as closed
    (expired) even before the expiry timer ran."""
    expired = doc["status"] == "open" and doc["valid_until"] <= now
    out = {"id": doc["_id"]}
    out.update({k: doc.get(k) for k in POSTING_FIELDS})
    out["region_name"] = regions.all_codes().get(doc["region_code"])
    if full:
        out["description"] = doc["description"]
    out.update({"valid_until": rfc3339(doc["valid_until"]), "created_at": rfc3339(doc["created_at"]),
                "status": "closed" if expired else doc["status"],
                "closed_reason": "expired" if expired else doc.get("closed_reason")})
    return out


def employer_view(doc):
    return {"id": doc["_id"], "name": doc["name"], "uscc": doc["uscc"], "region_code": doc["region_code"],
            "industry": doc["industry"], "size": doc["size"], "created_at": rfc3339(doc["created_at"])}


def resume_view(doc):
    out = {k: doc.get(k) for k in ("name", "education", "experience_years", "skills", "desired_categories",
                                   "desired_region_codes", "summary")}
    out["updated_at"] = rfc3339(doc.get("updated_at"))
    return out


def member_application_view(doc):
    return {"id": doc["_id"], "job_id": doc["job_id"], "job_title": doc["job_title"],
            "employer_name": doc.get("employer_name"), "status": doc["status"],
            "created_at": rfc3339(doc["created_at"]), "updated_at": rfc3339(doc["updated_at"])}


def employer_application_view(doc, resume, member):
    return {"id": doc["_id"], "job_id": doc["job_id"], "job_title": doc["job_title"], "status": doc["status"],
            "created_at": rfc3339(doc["created_at"]), "updated_at": rfc3339(doc["updated_at"]),
            "applicant": applicant_view(resume, member)}


def fair_view(doc):
    return {"id": doc["_id"], "title": doc["title"], "kind": doc["kind"], "region_code": doc["region_code"],
            "venue": doc.get("venue"), "stream_url": doc.get("stream_url"), "starts_at": rfc3339(doc["starts_at"]),
            "ends_at": rfc3339(doc["ends_at"]), "booth_count": doc.get("booth_count", 0),
            "created_at": rfc3339(doc["created_at"])}


def alert_view(doc):
    return {"region_codes": doc["region_codes"], "categories": doc["categories"], "keywords": doc["keywords"],
            "updated_at": rfc3339(doc.get("updated_at"))}


# ---- event payloads (the catalogue's data of each jobs event) ----------------------------------------------------
def posted_data(job):
    return {"job_id": job["_id"], "employer_id": job["employer_id"], "employer_name": job["employer_name"],
            "title": job["title"], "category": job["category"], "region_code": job["region_code"],
            "salary_min": job["salary_min"], "salary_max": job["salary_max"],
            "valid_until": rfc3339(job["valid_until"])}


def closed_data(job, reason):
    """``job``: the posting as it was (``_id``, ``employer_id``); ``reason``: ``closed`` or ``expired``."""
    return {"job_id": job["_id"], "employer_id": job["employer_id"], "reason": reason}


def submitted_data(app):
    return {"application_id": app["_id"], "job_id": app["job_id"], "job_title": app["job_title"],
            "employer_id": app["employer_id"], "user_id": app["user_id"]}


def status_changed_data(app, status):
    return dict(submitted_data(app), status=status)


def fair_scheduled_data(fair):
    return {"fair_id": fair["_id"], "title": fair["title"], "kind": fair["kind"], "region_code": fair["region_code"],
            "starts_at": rfc3339(fair["starts_at"]), "ends_at": rfc3339(fair["ends_at"])}


def alert_matched_data(posted, user_ids):
    """One ``job_alert_matched`` from the ``job_posted`` data and a chunk of the members to tell."""
    return {"job_id": posted["job_id"], "title": posted["title"], "employer_name": posted["employer_name"],
            "region_code": posted["region_code"], "user_ids": user_ids}
