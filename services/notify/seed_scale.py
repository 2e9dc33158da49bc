"""Notify's part of ``make seed-scale`` (``deploy/seed_scale.py`` runs it): the member projection as the membership
events built it, the members' devices (40 % of active members have the app with push on), their inbox entries of the
past 90 days at the capacity model's volume (``--inbox-per-user``, default 30: 5 a day for 500,000 daily users over
90 days, spread over 7.5 million), of which 80 % read, and a year of announcements (each prefecture federation two a
week, the province one, new-employment-form groups one a fortnight), written once as the service writes them.
"""
import datetime
import random

from unionhub_kit import population, regions

from . import domain, store

DEVICE_SHARE = 0.4
READ_SHARE = 0.8
TEMPLATES = (("coupon_claimed", "benefits", "领券成功", "您已领取{n}元消费券。"),
             ("coupon_redeemed", "benefits", "核销成功", "消费券已在商户核销。"),
             ("job_alert_matched", "jobs", "新职位推荐", "有{n}个新职位符合您的订阅。"),
             ("application_status_changed", "jobs", "投递进度", "您投递的职位有新进展。"))


def run(ctx):
    db = ctx.db("notify")
    store.ensure_indexes(db)
    ctx.once(db, "announcements", lambda: load_announcements(db, ctx))
    per_user = ctx.per_user["inbox"]
    for b, people in ctx.batches(db, "members+inbox"):
        rng = random.Random("notify:%d" % b)
        members, devices, inbox = [], [], []
        for p in people:
            m = p["member"]
            if not m or m["status"] == "pending":
                continue
            members.append({"_id": p["user_id"], "member_id": m["member_id"], "union_id": m["union_id"],
                            "union_code": m["union_code"], "region_code": m["region_code"],
                            "occupation_group": m["occupation_group"], "status": m["status"],
                            "as_of": m["joined_at"], "active_since": m["joined_at"]})
            if m["status"] != "active":
                continue
            if rng.random() < DEVICE_SHARE:
                token = "seedtok%09d%s" % (p["i"], "x" * 24)
                devices.append({"_id": "dev_seed%09d" % p["i"], "user_id": p["user_id"],
                                "platform": rng.choice(("android", "ios")), "token": token,
                                "created_at": p["created_at"], "updated_at": p["created_at"]})
            for k in range(int(per_user / population.MEMBER_SHARE) + (rng.random() < per_user % 1)):
                template, category, title, body = rng.choice(TEMPLATES)
                at = ctx.province.epoch - datetime.timedelta(seconds=rng.randrange(90 * 86400))
                doc = domain.notification_doc(p["user_id"], template, {"title": title,
                                                                       "body": body.format(n=rng.randint(1, 9))},
                                              "seed:%d:%d" % (p["i"], k), at)
                doc["_id"] = "%012x%012x" % (int(at.timestamp() * 1000), p["i"] * 100 + k)
                doc["read"] = rng.random() < READ_SHARE
                inbox.append(doc)
        ctx.insert(db.members, members)
        ctx.insert(db.devices, devices)
        for k in range(0, len(inbox), 5000):
            ctx.insert(db.notifications, inbox[k:k + 5000])


def load_announcements(db, ctx):
    """A year of announcements, finished (their pushes went out when they were sent)."""
    rng = random.Random("notify:announcements")
    docs = []
    senders = [("51", {"region_codes": ["51"]}, 52)]
    senders += [(regions.normalize_prefix(p["code"]), {"region_codes": [p["code"]]}, 104)
                for p in regions.prefectures()]
    senders += [("51", {"occupation_groups": [g]}, 26) for g, _ in population.NEW_FORM_GROUPS]
    for scope, audience, per_year in senders:
        for n in range(per_year):
            at = ctx.province.epoch - datetime.timedelta(seconds=rng.randrange(population.YEAR_SECONDS))
            body = {"title": "工会通知 %s-%d" % (scope, n), "body": "请各位会员关注本期工会活动安排。",
                    "audience": dict({"region_codes": [], "occupation_groups": [], "union_ids": []}, **audience)}
            doc = domain.announcement_doc({"sub": "acc_admin", "scope": scope}, body, at)
            doc["_id"] = "%012x%012x" % (int(at.timestamp() * 1000), len(docs))
            doc.update(status="done", started_at=at, finished_at=at)
            docs.append(doc)
    for k in range(0, len(docs), 1000):
        store_insert(db, docs[k:k + 1000])
    return len(docs)


def store_insert(db, docs):
    store.insert_new(db.announcements, docs)
