"""What a valid request body or membership event looks like, built one way for the service tests (RPC), the end-to-end
tests (HTTP) and the benchmarks: ``joined_event``, ``left_event``, ``merchant_body``, ``campaign_body``,
``employer_body``. Every builder takes overrides as keyword arguments."""
import datetime
import itertools
import random

from unionhub_kit import clock, events, ids

_seq = itertools.count(random.randrange(10 ** 6))


def iso_in(**delta):
    """RFC 3339 of now plus ``delta`` (``days=1``, ``minutes=-1``)."""
    return events.rfc3339(clock.now() + datetime.timedelta(**delta))


def new_uscc():
    """A fresh valid unified social credit code (GB 32100), never the same twice in this process."""
    return ids.make_uscc("91510104%09d" % (next(_seq) % 10 ** 9))


# ---- membership events (as membership's outbox publishes them) ----------------------------------------------------
def member_data(user_id, region="510104", union_code=None, group="courier", status="active", **over):
    """The data of a ``member_joined`` of ``user_id`` in the grassroots union ``<region>0001``."""
    union_code = union_code or region + "0001"
    data = {"member_id": "mbr_" + user_id, "user_id": user_id, "union_id": "un_" + union_code,
            "union_code": union_code, "region_code": region, "occupation_group": group, "status": status,
            "card_no": "SC1", "joined_at": iso_in(), "phone_masked": "138****5678"}
    data.update(over)
    return data


def joined_event(user_id, event_id=None, **kw):
    """A ``member_joined`` envelope (``kw``: see ``member_data``)."""
    data = member_data(user_id, **kw)
    return events.build("membership", "member_joined", data, subject=data["member_id"], event_id=event_id)


def left_event(user_id, union_code="5101040001", erased=False):
    data = {"member_id": "mbr_" + user_id, "user_id": user_id, "union_id": "un_" + union_code, "erased": erased}
    return events.build("membership", "member_left", data, subject=data["member_id"])


# ---- bodies ---------------------------------------------------------------------------------------------------------
def merchant_body(region="510104", **over):
    return dict({"name": "蜀味面馆 %04d" % (next(_seq) % 10 ** 4), "uscc": new_uscc(), "region_code": region}, **over)


def campaign_body(merchant_id, **over):
    """A live campaign (claims open a minute ago, for a day; redeemable for a week), 5 coupons, one a member, open to
    everyone (``eligibility`` empty)."""
    body = {"title": "满50减10", "merchant_id": merchant_id, "face_value_cents": 1000, "min_spend_cents": 5000,
            "quota": 5, "per_member_limit": 1, "claim_starts_at": iso_in(minutes=-1), "claim_ends_at": iso_in(days=1),
            "redeem_ends_at": iso_in(days=7),
            "eligibility": {"region_codes": [], "occupation_groups": [], "union_ids": []}, "welcome": False}
    body.update(over)
    return body


def employer_body(region="510104", **over):
    return dict({"name": "蜀道机械有限公司%04d" % (next(_seq) % 10 ** 4), "uscc": new_uscc(), "region_code": region,
                 "industry": "制造", "size": "small"}, **over)
