"""Reference data and the bootstrap account, written when the membership container starts.

The province union, its 21 prefecture unions and 183 county unions (from ``unionhub_kit.regions``) are upserted in
one bulk write; the staff account ``admin`` (union_admin, scope ``51``) is created once when
``UNIONHUB_ADMIN_PASSWORD`` is set (a later change of the variable does not change the stored password). Both are
idempotent, so replicas starting together do not conflict.
"""
import logging

from unionhub_kit import clock, config, keys, regions

from . import domain, store

log = logging.getLogger("unionhub.membership")

ADMIN_ID = "acc_admin"
ADMIN_USERNAME = "admin"
ADMIN_SCOPE = "51"


def region_unions():
    """The union documents of the province, its prefectures and counties (``_id`` derived from the code)."""
    province = regions.PROVINCE_CODE
    docs = [_union(province, regions.PROVINCE_NAME + "总工会", None)]
    docs += [_union(p["code"], p["name_zh"] + "总工会", province) for p in regions.prefectures()]
    docs += [_union(c["code"], c["name_zh"] + "总工会", c["prefecture_code"]) for c in regions.counties()]
    return docs


def _union(code, name, parent_code):
    return {"_id": domain.union_id_for(code), "code": code, "name": name, "level": regions.level_of(code),
            "parent_id": domain.union_id_for(parent_code) if parent_code else None, "parent_code": parent_code,
            "region_code": code}


def bootstrap_admin(db, password):
    if not password or store.account_exists(db, ADMIN_ID):
        return
    why = domain.password_problem(password, ADMIN_USERNAME)
    if why and not keys.is_development():
        log.error("UNIONHUB_ADMIN_PASSWORD %s The bootstrap account 'admin' is not created.", why)
        return
    if why:
        log.warning("UNIONHUB_ADMIN_PASSWORD %s (allowed in development only)", why)
    p = {"username": ADMIN_USERNAME, "role": "union_admin", "password": password}
    store.ensure_account(db, domain.account_doc(p, ADMIN_SCOPE, "bootstrap", clock.now(), account_id=ADMIN_ID))


def prepare(db):
    """The ``Mongo`` dependency's start hook: indexes, member counters, region unions, bootstrap admin."""
    store.ensure_indexes(db)
    store.ensure_member_counts(db)
    store.seed_unions(db, region_unions())
    bootstrap_admin(db, config.get("UNIONHUB_ADMIN_PASSWORD"))
