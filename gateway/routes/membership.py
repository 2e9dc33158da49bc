"""Membership routes of API.md: union organisations, joining, the member's own record, transfers, leaving, and
the union staff's review, lists and statistics.

Transfers into a union that does not approve at once wait for an admin in scope of the receiving union:
``GET /api/v1/admin/transfers`` lists them, ``POST /api/v1/admin/transfers/{id}/approve`` (or ``/reject``) decides.
"""
from services.membership import schemas

from ..framework import SHORT_CACHE_SECONDS, json_response, route
from ..revocations import REVOCATIONS

TAGS = ["Membership"]
ADMIN = ["union_admin"]


@route("GET", "/api/v1/unions", query=schemas.UnionListArgs, tags=TAGS, response=schemas.UnionPage,
       summary="Union organisations (province, prefectures, counties, grassroots), by code",
       cache=SHORT_CACHE_SECONDS)
def list_unions(gw, call):
    return gw.membership.list_unions(call.query)


@route("GET", "/api/v1/unions/<union_id>", tags=TAGS, response=schemas.UnionAnswer, summary="One union organisation",
       errors=("404 NOT_FOUND",), cache=SHORT_CACHE_SECONDS)
def get_union(gw, call):
    return gw.membership.get_union(call.path_params["union_id"])


@route("POST", "/api/v1/unions", roles=ADMIN, body=schemas.UnionCreate, status=201, idempotent=True, tags=TAGS,
       response=schemas.UnionAnswer,
       summary="Create a grassroots union (建会) under a county or prefecture union in your scope",
       errors=("404 NOT_FOUND", "403 OUT_OF_SCOPE", "409 USCC_TAKEN", "422 IDEMPOTENCY_KEY_REUSED"))
def create_union(gw, call):
    return gw.membership.create_union(call.actor, call.body, call.idempotency_key)


@route("POST", "/api/v1/members", roles=["member"], body=schemas.JoinRequest, status=201, idempotent=True, tags=TAGS,
       response=schemas.JoinAnswer,
       summary="Join a grassroots union (一键入会); active at once where the union approves at once",
       errors=("404 NOT_FOUND", "409 ALREADY_MEMBER", "422 IDEMPOTENCY_KEY_REUSED"))
def join(gw, call):
    return gw.membership.join(call.actor, call.body, call.idempotency_key)


@route("GET", "/api/v1/members/me", roles=["member"], tags=TAGS, response=schemas.MemberAnswer,
       summary="Your membership (ID number and phone masked)", errors=("404 NOT_FOUND",))
def get_me(gw, call):
    return gw.membership.get_me(call.actor)


@route("POST", "/api/v1/members/me/transfers", roles=["member"], body=schemas.TransferRequest, status=202,
       tags=TAGS, response=schemas.TransferAnswer,
       summary="Transfer (转会) to another union: 202 pending its approval, 200 when it approves at once",
       errors=("404 NOT_FOUND", "409 NOT_ACTIVE", "409 SAME_UNION", "409 TRANSFER_PENDING"))
def request_transfer(gw, call):
    result = gw.membership.request_transfer(call.actor, call.body)
    return json_response(result, 200 if result["status"] == "completed" else 202)


@route("DELETE", "/api/v1/members/me", roles=["member"], query=schemas.LeaveQuery, status=204, tags=TAGS,
       summary="Leave your union; ?erase=true also erases your name, ID number, employer and phone",
       errors=("404 NOT_FOUND",))
def leave(gw, call):
    revocation = gw.membership.leave(call.actor, call.query["erase"])
    if revocation:  # erased: every token of this member answers 401 from now on
        REVOCATIONS.apply([revocation])


@route("GET", "/api/v1/admin/members", roles=ADMIN, query=schemas.MemberListArgs, tags=TAGS, response=schemas.MemberPage,
       summary="Members of the unions in your scope", errors=("404 NOT_FOUND",))
def list_members(gw, call):
    return gw.membership.list_members(call.actor, call.query)


@route("POST", "/api/v1/admin/members/<member_id>/approve", roles=ADMIN, tags=TAGS, response=schemas.ReviewAnswer,
       summary="Approve a pending member: active, with a card number", errors=("404 NOT_FOUND", "409 NOT_PENDING"))
def approve_member(gw, call):
    return gw.membership.approve_member(call.actor, call.path_params["member_id"])


@route("POST", "/api/v1/admin/members/<member_id>/reject", roles=ADMIN, body=schemas.RejectRequest, tags=TAGS,
       response=schemas.ReviewAnswer,
       summary="Reject a pending member with a reason", errors=("404 NOT_FOUND", "409 NOT_PENDING"))
def reject_member(gw, call):
    return gw.membership.reject_member(call.actor, call.path_params["member_id"], call.body)


@route("GET", "/api/v1/admin/transfers", roles=ADMIN, query=schemas.TransferListArgs, tags=TAGS, response=schemas.TransferPage,
       summary="Transfers into the unions in your scope", errors=("404 NOT_FOUND",))
def list_transfers(gw, call):
    return gw.membership.list_transfers(call.actor, call.query)


@route("POST", "/api/v1/admin/transfers/<transfer_id>/approve", roles=ADMIN, tags=TAGS, response=schemas.TransferAnswer,
       summary="Approve a transfer into a union in your scope: the member moves",
       errors=("404 NOT_FOUND", "409 NOT_PENDING", "409 NOT_ACTIVE"))
def approve_transfer(gw, call):
    return gw.membership.approve_transfer(call.actor, call.path_params["transfer_id"])


@route("POST", "/api/v1/admin/transfers/<transfer_id>/reject", roles=ADMIN, body=schemas.RejectRequest, tags=TAGS,
       response=schemas.TransferAnswer,
       summary="Reject a transfer into a union in your scope", errors=("404 NOT_FOUND", "409 NOT_PENDING"))
def reject_transfer(gw, call):
    return gw.membership.reject_transfer(call.actor, call.path_params["transfer_id"], call.body)


@route("GET", "/api/v1/admin/stats/members", roles=ADMIN, query=schemas.StatsQuery, tags=TAGS, response=schemas.StatsAnswer,
       summary="Member counts in your scope by prefecture, county, union or occupation group")
def member_stats(gw, call):
    return gw.membership.member_stats(call.actor, call.query)
