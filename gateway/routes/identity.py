"""Identity routes of API.md: login codes, tokens and accounts (membership issues the tokens)."""
from services.membership import schemas

from unionhub_kit import tokens
from unionhub_kit.errors import AppError

from ..framework import client_address, route
from ..revocations import REVOCATIONS

TAGS = ["Identity"]


@route("POST", "/api/v1/auth/otp", body=schemas.OtpRequest, status=202, tags=TAGS, response=schemas.OtpAnswer,
       summary="Send a one-time login code to a mainland mobile by SMS (at most OTP_PER_ADDRESS_PER_HOUR an hour "
               "from one client address)", errors=("429 RATE_LIMITED",))
def request_otp(gw, call):
    return gw.membership.request_otp(call.body, client_address(call.request))


@route("POST", "/api/v1/auth/token", body=schemas.TokenRequest, tags=TAGS, response=schemas.TokenAnswer,
       summary="Exchange {phone, code} (members) or {username, password} (staff, merchants, employers, "
               "integrators) for a bearer token; five wrong passwords in a row lock a username for "
               "LOGIN_LOCKOUT_SECONDS", errors=("401 INVALID_CODE", "401 INVALID_CREDENTIALS", "429 RATE_LIMITED"))
def issue_token(gw, call):
    return gw.membership.issue_token(call.body)


@route("POST", "/api/v1/admin/accounts", roles=["union_admin"], body=schemas.AccountCreate, status=201,
       idempotent=True, tags=TAGS, response=schemas.AccountAnswer,
       summary="Create a staff, merchant, employer or integrator account in your scope",
       errors=("403 OUT_OF_SCOPE", "409 USERNAME_TAKEN", "422 IDEMPOTENCY_KEY_REUSED"))
def create_account(gw, call):
    return gw.membership.create_account(call.actor, call.body, call.idempotency_key)


@route("POST", "/api/v1/auth/refresh", body=schemas.RefreshRequest, tags=TAGS, response=schemas.TokenAnswer,
       summary="Spend a refresh token for a new access token and a new refresh token (rotation; a spent one "
               "presented again ends the whole login)", errors=("401 INVALID_TOKEN", "401 REFRESH_TOKEN_REUSED"))
def refresh(gw, call):
    try:
        return gw.membership.refresh_token(call.body)
    except AppError as exc:
        if exc.code == "REFRESH_TOKEN_REUSED":  # membership ended the login: its access tokens too, from now
            REVOCATIONS.sync(gw.membership)
        raise


@route("POST", "/api/v1/auth/logout", roles=list(tokens.ROLES), status=204, tags=TAGS,
       summary="End this login: its access token and its refresh token stop working at once")
def logout(gw, call):
    REVOCATIONS.apply([gw.membership.logout(call.actor)])


@route("POST", "/api/v1/admin/accounts/<account_id>/disable", roles=["union_admin"], tags=TAGS,
       response=schemas.AccountAnswer, errors=("403 OUT_OF_SCOPE", "404 NOT_FOUND"),
       summary="Disable an account in your scope: it cannot log in and every token of it answers 401 at once")
def disable_account(gw, call):
    done = gw.membership.disable_account(call.actor, call.path_params["account_id"])
    REVOCATIONS.apply([done.pop("revocation")])
    return done
