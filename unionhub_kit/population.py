"""The synthetic province that ``make seed-scale`` loads: who the users and members are, decided once here so that
every service's seed-scale module derives the same people (membership their records, the other services the
projections their event handlers would have built from them).

Deterministic: batch ``b`` of users is generated from its own random generator (``seed``, ``b``), so any service can
generate any batch again, in any order, and a load that was interrupted continues at the next batch.

The model (assumptions, stated where the seed gives no figure):

* users: ``users`` phones (7,500,000 on the real platform); 85 % of them have a membership record, which is active
  (92 %), pending (3 %) or left (5 %);
* a member's prefecture in proportion to its population (the 2020 census, below); its county evenly among the
  prefecture's counties with a random weight of 0.5-1.5 (the seed carries no county populations);
* the nine new-employment-form groups hold ``NEW_FORM_SHARE`` of members (1,626,000 of the 6,375,000 members of the
  full seed) and belong to the 11,900 new-employment-form grassroots unions; everyone else (``other``) to 30,000
  traditional grassroots unions; grassroots unions per county in proportion to the county's weight.
"""
import datetime
import itertools
import random

from . import regions

USERS = 7_500_000
MEMBER_SHARE = 0.85
STATUS_WEIGHTS = (("active", 92), ("pending", 3), ("left", 5))
NEW_FORM_MEMBERS = 1_626_000
NEW_FORM_SHARE = NEW_FORM_MEMBERS / (USERS * MEMBER_SHARE)
NEW_FORM_UNIONS = 11_900
TRADITIONAL_UNIONS = 30_000
# the nine new-employment-form groups and their relative sizes (assumed; delivery riders and couriers largest)
NEW_FORM_GROUPS = (("delivery_rider", 26), ("courier", 22), ("truck_driver", 14), ("ride_hailing_driver", 12),
                   ("domestic_worker", 7), ("care_worker", 6), ("security_guard", 6), ("mall_staff", 4),
                   ("estate_agent", 3))
# resident population by prefecture, in 10,000s (Sichuan, 7th census, 2020)
POPULATION = {"510100": 2094, "510300": 249, "510400": 121, "510500": 425, "510600": 346, "510700": 487,
              "510800": 231, "510900": 281, "511000": 314, "511100": 316, "511300": 560, "511400": 296,
              "511500": 459, "511600": 325, "511700": 539, "511800": 143, "511900": 271, "512000": 231,
              "513200": 82, "513300": 111, "513400": 486}
EPOCH = datetime.datetime(2025, 12, 1, tzinfo=datetime.timezone.utc)  # default end of the loaded history
YEAR_SECONDS = 365 * 86400


class Province:
    """The counties with their weights and the grassroots unions in them."""

    def __init__(self, seed=13, union_share=1.0, epoch=EPOCH):
        self.seed, self.epoch = seed, epoch  # the loaded history ends at ``epoch`` (seed-scale: the day it began)
        rng = random.Random("%d:province" % seed)
        by_pref = {}
        for c in regions.counties():
            by_pref.setdefault(c["prefecture_code"], []).append(c["code"])
        weights = {}
        for pref, counties in by_pref.items():
            raw = {c: rng.uniform(0.5, 1.5) for c in counties}
            total = sum(raw.values())
            for c, w in raw.items():
                weights[c] = POPULATION.get(pref, 100) * w / total
        self.counties = sorted(weights)
        self.county_weights = [weights[c] for c in self.counties]
        self.county_cum = list(itertools.accumulate(self.county_weights))
        total = sum(self.county_weights)
        # kind -> county -> [union code]: per county in proportion to its weight, at least one of each kind; codes
        # 5001+ under the county (unions created through the API number from 0001)
        self.unions = {"new_form": {}, "traditional": {}}
        seq = dict.fromkeys(self.counties, 5000)
        for kind, n in (("new_form", NEW_FORM_UNIONS * union_share), ("traditional", TRADITIONAL_UNIONS * union_share)):
            for c, w in zip(self.counties, self.county_weights):
                count = max(1, round(n * w / total))
                self.unions[kind][c] = ["%s%04d" % (c, seq[c] + k + 1) for k in range(count)]
                seq[c] += count

    def union_docs(self):
        """``(code, county, kind)`` of every grassroots union."""
        for kind, by_county in self.unions.items():
            for county, codes in by_county.items():
                for code in codes:
                    yield code, county, kind


def phone_of(i):
    """User ``i``'s phone: distinct for every ``i`` below 10^9 (prefix 19x, not handed out to real people here)."""
    return "19%09d" % i


def user_id(i):
    return "usr_seed%09d" % i


def member_id(i):
    return "mbr_seed%09d" % i


def batch(province, b, size, users):
    """Users ``b*size .. min(users, (b+1)*size)-1``: ``[{i, user_id, phone, created_at, last_login_at, logins,
    member: None | {member_id, union_code, region_code, occupation_group, status, joined_at, ...}}]``."""
    rng = random.Random("%d:batch:%d" % (province.seed, b))
    out = []
    statuses = [s for s, _ in STATUS_WEIGHTS]
    status_w = list(itertools.accumulate(w for _, w in STATUS_WEIGHTS))
    groups = [g for g, _ in NEW_FORM_GROUPS]
    group_w = list(itertools.accumulate(w for _, w in NEW_FORM_GROUPS))
    for i in range(b * size, min(users, (b + 1) * size)):
        epoch = province.epoch
        created = epoch - datetime.timedelta(seconds=rng.randrange(3 * YEAR_SECONDS))
        last = min(epoch, created + datetime.timedelta(seconds=rng.randrange(YEAR_SECONDS)))
        u = {"i": i, "user_id": user_id(i), "phone": phone_of(i), "created_at": _ms(created),
             "last_login_at": _ms(last), "logins": rng.randint(1, 400), "member": None}
        if rng.random() < MEMBER_SHARE:
            county = rng.choices(province.counties, cum_weights=province.county_cum)[0]
            new_form = rng.random() < NEW_FORM_SHARE
            group = rng.choices(groups, cum_weights=group_w)[0] if new_form else "other"
            union_code = rng.choice(province.unions["new_form" if new_form else "traditional"][county])
            status = rng.choices(statuses, cum_weights=status_w)[0]
            joined = _ms(created + datetime.timedelta(seconds=rng.randrange(max(1, int(
                (epoch - created).total_seconds())))))
            u["member"] = {"member_id": member_id(i), "union_code": union_code, "union_id": "un_" + union_code,
                           "region_code": county, "prefecture_code": regions.prefecture_of(county),
                           "occupation_group": group, "status": status, "joined_at": joined,
                           "id_number": _id_number(rng, county, i), "name": _name(rng)}
        out.append(u)
    return out


def _ms(t):
    return t.replace(microsecond=t.microsecond // 1000 * 1000)


SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董潘袁蔡蒋余于杜叶程魏苏吕丁任沈"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰建国志红梅晨阳浩宇欣怡子涵雨萱"


def _name(rng):
    return rng.choice(SURNAMES) + "".join(rng.sample(GIVEN, rng.choice((1, 2))))


def _id_number(rng, county, i):
    """A resident ID number with a valid check digit, distinct for every ``i`` below 7,665,000 (birth date and
    sequence digits from ``i``: born 1960-2001)."""
    birth = datetime.date(1960, 1, 1) + datetime.timedelta(days=(i // 1000) * 2)
    body = "%s%s%03d" % (county, birth.strftime("%Y%m%d"), i % 1000)
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    check = "10X98765432"[sum(int(d) * w for d, w in zip(body, weights)) % 11]
    return body + check
