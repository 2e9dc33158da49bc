"""Marshmallow schemas of jobs: the gateway validates HTTP bodies and queries with them, the service validates its
RPC payloads with the very same classes."""
import datetime
import re

from marshmallow import ValidationError, fields, validate, validates, validates_schema

from unionhub_kit import clock, ids
from unionhub_kit.schema import Page as KitPage
from unionhub_kit.schema import Id, RegionCode, RegionPrefix, StrictInteger, StrictSchema, Text, Uscc

from .text import decode_cursor, query_tokens

# major groups of the national occupation classification (职业分类大典): 1 managers ... 8 others
CATEGORIES = ("1", "2", "3", "4", "5", "6", "7", "8")
EDUCATION = ("none", "primary", "junior_high", "senior_high", "vocational", "associate", "bachelor", "master",
             "doctorate")
EMPLOYER_SIZES = ("micro", "small", "medium", "large")
FAIR_KINDS = ("online", "onsite", "livestream")
# submitted -> viewed -> interview -> offer, or rejected from any stage before a decision
FLOW = ("submitted", "viewed", "interview", "offer")
APPLICATION_STATUSES = FLOW + ("rejected",)
TARGET_STATUSES = ("viewed", "interview", "offer", "rejected")
MAX_VALIDITY_DAYS = 3650
MAX_BOOTH_POSTINGS = 20
UTC = datetime.timezone.utc


def contains_id_number(text):
    """Whether free text carries something that passes as a resident ID number (resumes must not hold one)."""
    return any(ids.is_valid_resident_id(m) for m in re.findall(r"(?<![0-9A-Za-z])\d{17}[\dXx](?![0-9A-Za-z])",
                                                               text or ""))


def Category(**kw):
    return fields.String(validate=validate.OneOf(CATEGORIES, error="must be one of 1..8 (a major group of "
                                                                   "the occupation classification)."), **kw)


def Education(**kw):
    return fields.String(validate=validate.OneOf(EDUCATION), **kw)


def Time(**kw):
    """An RFC 3339 time; without an offset it is taken as UTC."""
    return fields.AwareDateTime(default_timezone=UTC, **kw)


class Cursor(fields.String):
    """An opaque cursor from a previous page (checked here, so a malformed one is a 400 before any work)."""
    default_error_messages = {"cursor": "is not a cursor from a previous page."}

    def _deserialize(self, value, attr, data, **kw):
        v = super()._deserialize(value, attr, data, **kw)
        try:
            decode_cursor(v)
        except ValueError:
            raise self.make_error("cursor")
        return v


class Page(KitPage):
    """The kit's page, its cursor checked as an ``order_key`` cursor."""
    cursor = Cursor(load_default=None, validate=validate.Length(max=512))


# ---- employers ------------------------------------------------------------------------------------------------
class EmployerCreate(StrictSchema):
    name = Text(100, min_len=2, required=True)
    uscc = Uscc(required=True)
    region_code = RegionCode(required=True)
    industry = Text(64, required=True)
    size = fields.String(required=True, validate=validate.OneOf(EMPLOYER_SIZES))


# ---- postings -------------------------------------------------------------------------------------------------
class JobCreate(StrictSchema):
    """Every field MOHRSS order no. 44 asks of a posting: content, requirements, location, pay, headcount, validity."""
    title = Text(64, min_len=2, required=True)
    category = Category(required=True)
    region_code = RegionCode(required=True)
    address = Text(200, min_len=2, required=True)
    salary_min = StrictInteger(required=True, validate=validate.Range(min=1, max=1000000),
                               metadata={"description": "Monthly pay, yuan."})
    salary_max = StrictInteger(required=True, validate=validate.Range(min=1, max=1000000),
                               metadata={"description": "Monthly pay, yuan."})
    headcount = StrictInteger(required=True, validate=validate.Range(min=1, max=100000))
    education = Education(required=True, metadata={"description": "Minimum education; `none` = no requirement."})
    experience_years = StrictInteger(required=True, validate=validate.Range(min=0, max=50))
    description = Text(5000, min_len=2, required=True)
    valid_until = Time(required=True)

    @validates("valid_until")
    def in_future(self, value, **kw):
        now = clock.now()
        if value <= now:
            raise ValidationError("must be in the future.")
        if value > now + datetime.timedelta(days=MAX_VALIDITY_DAYS):
            raise ValidationError("must be within %d days." % MAX_VALIDITY_DAYS)

    @validates_schema
    def pay_range(self, data, **kw):
        if "salary_min" in data and "salary_max" in data and data["salary_min"] > data["salary_max"]:
            raise ValidationError("must not be greater than salary_max.", "salary_min")


class JobSearch(Page):
    q = Text(50, metadata={"description": "Keywords (Chinese or Latin) in title and description."})
    region_code = RegionPrefix(metadata={"description": "Region prefix: 51, 5101 (all of Chengdu), 510104."})
    category = Category()
    salary_min = fields.Integer(validate=validate.Range(min=0, max=1000000),
                                metadata={"description": "Postings paying at least this (their salary_min)."})

    @validates("q")
    def searchable(self, value, **kw):
        if not query_tokens(value):
            raise ValidationError("has no Chinese characters, letters or digits to search for.")


# ---- resumes, applications -----------------------------------------------------------------------------------
class Resume(StrictSchema):
    """A resume: no resident ID number, in any field."""
    name = Text(50, required=True)
    education = Education(required=True)
    experience_years = StrictInteger(required=True, validate=validate.Range(min=0, max=60))
    skills = fields.List(Text(30), load_default=list, validate=validate.Length(max=30))
    desired_categories = fields.List(Category(), load_default=list, validate=validate.Length(max=8))
    desired_region_codes = fields.List(RegionPrefix(), load_default=list, validate=validate.Length(max=20))
    summary = Text(2000, min_len=0, load_default="")

    @validates_schema
    def no_id_number(self, data, **kw):
        for name in ("name", "summary", "skills"):
            value = data.get(name)
            text = " ".join(value) if isinstance(value, list) else value
            if contains_id_number(text):
                raise ValidationError("must not contain a resident ID number.", name)


class StatusChange(StrictSchema):
    status = fields.String(required=True, validate=validate.OneOf(TARGET_STATUSES))


class EmployerApplications(Page):
    job_id = Id()
    status = fields.String(validate=validate.OneOf(APPLICATION_STATUSES))


# ---- job fairs ------------------------------------------------------------------------------------------------
class FairCreate(StrictSchema):
    title = Text(100, min_len=2, required=True)
    kind = fields.String(required=True, validate=validate.OneOf(FAIR_KINDS))
    region_code = RegionCode(required=True)
    venue = Text(200, min_len=2, metadata={"description": "Required for onsite fairs."})
    stream_url = fields.Url(schemes={"http", "https"}, validate=validate.Length(max=500),
                            metadata={"description": "Required for livestream fairs (直播带岗)."})
    starts_at = Time(required=True)
    ends_at = Time(required=True)

    @validates_schema
    def window_and_place(self, data, **kw):
        starts, ends = data.get("starts_at"), data.get("ends_at")
        if starts and ends and ends <= starts:
            raise ValidationError("must be after starts_at.", "ends_at")
        if ends and ends <= clock.now():
            raise ValidationError("must be in the future.", "ends_at")
        if data.get("kind") == "onsite" and not data.get("venue"):
            raise ValidationError("An onsite fair needs a venue.", "venue")
        if data.get("kind") == "livestream" and not data.get("stream_url"):
            raise ValidationError("A livestream fair needs a stream_url.", "stream_url")


class BoothCreate(StrictSchema):
    job_ids = fields.List(Id(), required=True, validate=validate.Length(min=1, max=MAX_BOOTH_POSTINGS))

    @validates("job_ids")
    def distinct(self, value, **kw):
        if len(set(value)) != len(value):
            raise ValidationError("must not repeat a posting.")


class FairList(Page):
    region_code = RegionPrefix()
    upcoming = fields.Boolean(load_default=False, metadata={
        "description": "Only fairs that have not ended yet, soonest first (otherwise newest first)."})


# ---- job alerts -----------------------------------------------------------------------------------------------
class JobAlert(StrictSchema):
    """Empty or missing lists do not restrict; dimensions combine with AND; at least one must be given."""
    region_codes = fields.List(RegionPrefix(), load_default=list, validate=validate.Length(max=20))
    categories = fields.List(Category(), load_default=list, validate=validate.Length(max=8))
    keywords = fields.List(Text(20), load_default=list, validate=validate.Length(max=10))

    @validates("keywords")
    def searchable(self, value, **kw):
        if any(not query_tokens(k) for k in value):
            raise ValidationError("every keyword needs Chinese characters, letters or digits.")

    @validates_schema
    def something(self, data, **kw):
        if not (data.get("region_codes") or data.get("categories") or data.get("keywords")):
            raise ValidationError("Name at least one region, category or keyword.")
