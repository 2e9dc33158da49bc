"""Public reads through the gateway: ETag / If-None-Match -> 304, Cache-Control, the gateway's short cache dropped
by the writes it passes on, and a campaign's ``remaining`` never more than what is left."""
import requests

from support import client
from support.client import new_campaign, new_merchant, post, projected_members


def get(stack, path, params=None, headers=None):
    return requests.get(stack.url + path, params=params, headers=headers or {}, timeout=30)


def test_public_lists_answer_etags_and_304s_and_a_write_is_seen_at_once(stack):
    admin = client.admin_token(stack)
    params = {"level": "grassroots", "limit": 100}
    first = get(stack, "/api/v1/unions", params)
    assert first.status_code == 200 and first.headers["ETag"].startswith('W/"')
    assert first.headers["Cache-Control"] == "public, max-age=1"
    again = get(stack, "/api/v1/unions", params, {"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304 and again.content == b"" and again.headers["ETag"] == first.headers["ETag"]
    other = get(stack, "/api/v1/unions", params, {"If-None-Match": 'W/"something-else"'})
    assert other.status_code == 200 and other.json() == first.json()
    # a union created through this gateway is listed by the very next read (the cached list was dropped)
    union = client.create_union(stack, admin)
    seen = []
    page = get(stack, "/api/v1/unions", params).json()
    while True:
        seen += [u["id"] for u in page["items"]]
        if not page["next_cursor"]:
            break
        page = get(stack, "/api/v1/unions", dict(params, cursor=page["next_cursor"])).json()
    assert union["id"] in seen
    assert get(stack, "/api/v1/unions", params, {"If-None-Match": first.headers["ETag"]}).status_code == 200
    # bad queries are still refused (never served from the cache)
    assert get(stack, "/api/v1/unions", {"level": "galaxy"}).status_code == 400


def test_a_live_campaign_is_never_answered_with_more_than_is_left(stack):
    admin = client.admin_token(stack)
    merchant = new_merchant(stack, admin)
    c = new_campaign(stack, merchant["id"], admin, quota=3)
    path = "/api/v1/campaigns/%s" % c["id"]
    before = get(stack, path)
    assert before.status_code == 200 and before.json()["remaining"] == 3
    assert before.headers["Cache-Control"] == "no-cache" and before.headers["ETag"]
    assert get(stack, path, headers={"If-None-Match": before.headers["ETag"]}).status_code == 304
    (user, token), = projected_members(stack, 1)
    assert post(stack, path + "/claims", token).status_code == 201
    after = get(stack, path, headers={"If-None-Match": before.headers["ETag"]})
    assert after.status_code == 200 and after.json()["remaining"] == 2  # at once, not a second later
    listed = [x for x in get(stack, "/api/v1/campaigns", {"limit": 100}).json()["items"] if x["id"] == c["id"]]
    assert listed and listed[0]["remaining"] == 2
    for _, t in projected_members(stack, 2):
        assert post(stack, path + "/claims", t).status_code == 201
    sold = get(stack, path)
    assert sold.json()["remaining"] == 0 and sold.headers["Cache-Control"] == "public, max-age=1"  # final
