"""Public reads through the gateway: ETag / If-None-Match -> 304, Cache-Control, the gateway's short cache dropped
by the writes it passes on, and a campaign's ``remaining`` never more than what is left."""
import requests

from deploy.stack import free_port
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


def cache_events_seen(stack, event):
    """How many ``event`` the gateway process has heard (and dropped cached answers for): its metric."""
    r = requests.get(stack.url + "/metrics", headers={"Authorization": "Bearer " + stack.env["METRICS_TOKEN"]},
                     timeout=30)
    assert r.status_code == 200
    for line in r.text.splitlines():
        if line.startswith('unionhub_gateway_cache_events_total{event="%s"}' % event):
            return float(line.split()[-1])
    return 0.0


def subscribed(stack):
    r = requests.get(stack.url + "/metrics", headers={"Authorization": "Bearer " + stack.env["METRICS_TOKEN"]},
                     timeout=30)
    return "unionhub_gateway_cache_subscribed 1.0" in r.text


def test_a_live_campaign_is_kept_and_a_coupon_issued_elsewhere_is_reflected_once_its_event_arrives(make_stack):
    """Stock that goes down without this gateway (a welcome coupon issued by benefits' member_joined handler; a
    claim answered by a second gateway process) is in the next read of this gateway after its
    ``coupon_claimed`` event reached the gateway, and no read ever says more than a read before it. (A stack of its
    own: the events counted are this test's only.)"""
    stack = make_stack()
    admin = client.admin_token(stack)
    merchant = new_merchant(stack, admin)
    welcome = new_campaign(stack, merchant["id"], admin, welcome=True, quota=5)
    path = "/api/v1/campaigns/%s" % welcome["id"]
    client.wait_for(lambda: subscribed(stack), what="the gateway's subscription to stock events")
    first = get(stack, path)
    assert first.json()["remaining"] == 5
    assert first.headers["Cache-Control"] == "no-cache"  # clients revalidate: only the gateway hears of claims
    assert get(stack, path, headers={"If-None-Match": first.headers["ETag"]}).status_code == 304
    seen = [5]

    def remaining():
        value = get(stack, path).json()["remaining"]
        assert value <= seen[-1], "remaining went up: %s" % seen  # never more than a read before said
        seen.append(value)
        return value

    # a welcome coupon: membership's member_joined, no HTTP request through the gateway
    before = cache_events_seen(stack, "coupon_claimed")
    projected_members(stack, 1)
    client.wait_for(lambda: cache_events_seen(stack, "coupon_claimed") > before, what="coupon_claimed at the gateway")
    assert remaining() == 4  # the event arrived: the very next read is fresh
    listed = [x for x in get(stack, "/api/v1/campaigns", {"limit": 100}).json()["items"] if x["id"] == welcome["id"]]
    assert listed and listed[0]["remaining"] == 4

    # a claim answered by a second gateway process (a replica of this one, on its own port)
    port = free_port()
    stack.stack.start_service("gateway", 1, extra_env={"GATEWAY_PORT": str(port)})
    second = "http://127.0.0.1:%d" % port

    def second_ready():
        try:
            return requests.get(second + "/readyz", timeout=5).status_code == 200
        except requests.ConnectionError:
            return False
    client.wait_for(second_ready, 120, 0.3, what="the second gateway process")
    (_, token), = projected_members(stack, 1)
    client.wait_for(lambda: cache_events_seen(stack, "coupon_claimed") >= before + 2, what="the second welcome")
    assert remaining() == 3
    other = new_campaign(stack, merchant["id"], admin, quota=2)
    other_path = "/api/v1/campaigns/%s" % other["id"]
    assert get(stack, other_path).json()["remaining"] == 2  # kept by the first gateway now
    before = cache_events_seen(stack, "coupon_claimed")
    claimed = requests.post(second + other_path + "/claims", headers={"Authorization": "Bearer " + token}, timeout=30)
    assert claimed.status_code == 201, claimed.text
    client.wait_for(lambda: cache_events_seen(stack, "coupon_claimed") > before, what="the claim's event")
    assert get(stack, other_path).json()["remaining"] == 1
    assert remaining() == 3  # another campaign's claim left this one's answer alone (and honest)


def test_every_public_list_answers_etags_and_304s(stack):
    for path, params in (("/api/v1/unions", {"level": "prefecture"}), ("/api/v1/campaigns", {"limit": 5}),
                         ("/api/v1/fairs", None), ("/api/v1/jobs", {"q": "司机"})):
        first = get(stack, path, params)
        assert first.status_code == 200, (path, first.text)
        assert first.headers["ETag"].startswith('W/"') and first.headers["Cache-Control"], path
        again = get(stack, path, params, {"If-None-Match": first.headers["ETag"]})
        assert again.status_code == 304 and again.content == b"", path
        assert again.headers["ETag"] == first.headers["ETag"], path
