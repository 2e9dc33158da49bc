"""Jobs routes of API.md: employers, postings and search, resumes, applications, job fairs and booths, job alerts.

Beyond API.md: ``GET /api/v1/employers/{id}``, ``GET /api/v1/employer/jobs`` (the employer's own postings),
``GET /api/v1/members/me/resume``, ``GET`` and ``DELETE /api/v1/members/me/job-alerts``.
"""
from services.jobs import schemas

from ..framework import SHORT_CACHE_SECONDS, route

TAGS = ["Jobs"]
ADMIN = ["union_admin"]
EMPLOYER = ["employer"]
MEMBER = ["member"]
PAGE_ERRORS = ("400 VALIDATION_ERROR",)


# ---- employers ------------------------------------------------------------------------------------------------
@route("POST", "/api/v1/employers", roles=ADMIN, body=schemas.EmployerCreate, status=201, idempotent=True, tags=TAGS,
       summary="Register an employer (USCC checked) in your scope",
       errors=("403 OUT_OF_SCOPE", "409 EMPLOYER_EXISTS", "422 IDEMPOTENCY_KEY_REUSED"))
def create_employer(gw, call):
    return gw.jobs.create_employer(call.actor, call.body, call.idempotency_key)


@route("GET", "/api/v1/employers/<employer_id>", tags=TAGS, summary="One employer", errors=("404 NOT_FOUND",))
def get_employer(gw, call):
    return gw.jobs.get_employer(call.path_params["employer_id"])


# ---- postings -------------------------------------------------------------------------------------------------
@route("POST", "/api/v1/jobs", roles=EMPLOYER, body=schemas.JobCreate, status=201, idempotent=True, tags=TAGS,
       summary="Post a job with every field MOHRSS order no. 44 requires (pay in monthly yuan)",
       errors=("403 NOT_AN_EMPLOYER", "422 IDEMPOTENCY_KEY_REUSED"))
def create_job(gw, call):
    return gw.jobs.create_job(call.actor, call.body, call.idempotency_key)


@route("GET", "/api/v1/jobs", query=schemas.JobSearch, tags=TAGS,
       summary="Search open postings, newest first: q (Chinese or Latin keywords), region prefix, category, "
               "minimum salary", errors=PAGE_ERRORS, cache=SHORT_CACHE_SECONDS)
def search_jobs(gw, call):
    return gw.jobs.search_jobs(call.query)


@route("GET", "/api/v1/jobs/<job_id>", tags=TAGS, summary="One posting with its employer's name",
       errors=("404 NOT_FOUND",))
def get_job(gw, call):
    return gw.jobs.get_job(call.path_params["job_id"])


@route("POST", "/api/v1/jobs/<job_id>/close", roles=EMPLOYER, tags=TAGS, summary="Close your posting",
       errors=("403 NOT_OWNER", "404 NOT_FOUND"))
def close_job(gw, call):
    return gw.jobs.close_job(call.actor, call.path_params["job_id"])


@route("GET", "/api/v1/employer/jobs", roles=EMPLOYER, query=schemas.Page, tags=TAGS,
       summary="Your postings, newest first (open and closed)", errors=PAGE_ERRORS)
def employer_jobs(gw, call):
    return gw.jobs.employer_jobs(call.actor, call.query)


# ---- resumes and applications ---------------------------------------------------------------------------------
@route("PUT", "/api/v1/members/me/resume", roles=MEMBER, body=schemas.Resume, tags=TAGS,
       summary="Put your resume (one per member; no resident ID number)")
def put_resume(gw, call):
    return gw.jobs.put_resume(call.actor, call.body)


@route("GET", "/api/v1/members/me/resume", roles=MEMBER, tags=TAGS, summary="Your resume",
       errors=("404 NOT_FOUND",))
def get_resume(gw, call):
    return gw.jobs.get_resume(call.actor)


@route("POST", "/api/v1/jobs/<job_id>/applications", roles=MEMBER, status=201, idempotent=True, tags=TAGS,
       summary="Apply to an open posting (needs your resume)",
       errors=("404 NOT_FOUND", "409 RESUME_REQUIRED", "409 ALREADY_APPLIED", "409 CLOSED",
               "422 IDEMPOTENCY_KEY_REUSED"))
def apply(gw, call):
    return gw.jobs.apply(call.actor, call.path_params["job_id"], call.idempotency_key)


@route("GET", "/api/v1/members/me/applications", roles=MEMBER, query=schemas.Page, tags=TAGS,
       summary="Your applications with job title and status, newest first", errors=PAGE_ERRORS)
def my_applications(gw, call):
    return gw.jobs.my_applications(call.actor, call.query)


@route("GET", "/api/v1/employer/applications", roles=EMPLOYER, query=schemas.EmployerApplications, tags=TAGS,
       summary="Applications to your postings: resume and masked phone of each applicant",
       errors=("403 NOT_OWNER", "404 NOT_FOUND") + PAGE_ERRORS)
def employer_applications(gw, call):
    return gw.jobs.employer_applications(call.actor, call.query)


@route("POST", "/api/v1/applications/<application_id>/status", roles=EMPLOYER, body=schemas.StatusChange, tags=TAGS,
       summary="Move an application on: submitted -> viewed -> interview -> offer, or rejected",
       errors=("403 NOT_OWNER", "404 NOT_FOUND", "409 INVALID_TRANSITION"))
def set_application_status(gw, call):
    return gw.jobs.set_application_status(call.actor, call.path_params["application_id"], call.body)


# ---- job fairs ------------------------------------------------------------------------------------------------
@route("POST", "/api/v1/fairs", roles=ADMIN, body=schemas.FairCreate, status=201, idempotent=True, tags=TAGS,
       summary="Schedule a job fair (online, onsite, livestream 直播带岗) in your scope",
       errors=("403 OUT_OF_SCOPE", "422 IDEMPOTENCY_KEY_REUSED"))
def create_fair(gw, call):
    return gw.jobs.create_fair(call.actor, call.body, call.idempotency_key)


@route("POST", "/api/v1/fairs/<fair_id>/booths", roles=EMPLOYER, body=schemas.BoothCreate, status=201,
       idempotent=True, tags=TAGS, summary="Take a booth at a fair with your own open postings",
       errors=("403 NOT_OWNER", "404 NOT_FOUND", "409 CLOSED", "409 BOOTH_EXISTS", "409 FAIR_ENDED",
               "422 IDEMPOTENCY_KEY_REUSED"))
def add_booth(gw, call):
    return gw.jobs.add_booth(call.actor, call.path_params["fair_id"], call.body, call.idempotency_key)


@route("GET", "/api/v1/fairs", query=schemas.FairList, tags=TAGS, summary="Job fairs with their booth counts",
       errors=PAGE_ERRORS, cache=SHORT_CACHE_SECONDS)
def list_fairs(gw, call):
    return gw.jobs.list_fairs(call.query)


@route("GET", "/api/v1/fairs/<fair_id>", tags=TAGS, summary="A fair with its employers and their postings",
       errors=("404 NOT_FOUND",), cache=SHORT_CACHE_SECONDS)
def get_fair(gw, call):
    return gw.jobs.get_fair(call.path_params["fair_id"])


# ---- job alerts -----------------------------------------------------------------------------------------------
@route("PUT", "/api/v1/members/me/job-alerts", roles=MEMBER, body=schemas.JobAlert, tags=TAGS,
       summary="Set your job alert: new postings matching it are notified (regions, categories, keywords)")
def put_job_alert(gw, call):
    return gw.jobs.put_job_alert(call.actor, call.body)


@route("GET", "/api/v1/members/me/job-alerts", roles=MEMBER, tags=TAGS, summary="Your job alert",
       errors=("404 NOT_FOUND",))
def get_job_alert(gw, call):
    return gw.jobs.get_job_alert(call.actor)


@route("DELETE", "/api/v1/members/me/job-alerts", roles=MEMBER, status=204, tags=TAGS,
       summary="Turn your job alert off", errors=("404 NOT_FOUND",))
def delete_job_alert(gw, call):
    gw.jobs.delete_job_alert(call.actor)
