"""Identity routes of API.md: login codes, tokens and accounts (membership issues the tokens)."""
from services.membership import schemas

from ..framework import client_address, route

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
