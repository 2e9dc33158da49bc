"""unionhub_kit.affinity: where a call with an affinity key is published, the exchange both sides declare, and
``with_affinity`` on proxies that can and cannot carry a key (the broker path: tests/service/test_benefits_service.py,
the campaign affinity tests)."""
from unionhub_kit import affinity


def test_a_call_with_a_key_goes_to_the_affinity_exchange_with_the_key_as_a_text_header():
    assert affinity.route("benefits", "nameko-rpc", "cmp_1", True) == (
        "unionhub.affinity.benefits", {"x-affinity-key": "cmp_1"})
    assert affinity.route("benefits", "nameko-rpc", 7, True) == ("unionhub.affinity.benefits", {"x-affinity-key": "7"})


def test_without_a_key_or_without_the_exchange_a_call_goes_to_nameko_s_exchange_as_any_call():
    assert affinity.route("benefits", "nameko-rpc", None, True) == ("nameko-rpc", {})
    assert affinity.route("benefits", "nameko-rpc", "cmp_1", False) == ("nameko-rpc", {})
    assert affinity.route("benefits", "my-rpc", "cmp_1", False) == ("my-rpc", {})


def test_the_exchange_hashes_the_header_and_falls_through_to_the_rpc_exchange():
    ex = affinity.exchange("benefits", "nameko-rpc")
    assert (ex.name, ex.type, ex.durable, ex.auto_delete) == ("unionhub.affinity.benefits", "x-consistent-hash",
                                                              True, False)
    assert ex.arguments == {"hash-header": "x-affinity-key", "alternate-exchange": "nameko-rpc"}
    # callers and replicas declare it alike (the broker refuses a redeclare with other arguments)
    assert affinity.exchange("benefits", "nameko-rpc").arguments == ex.arguments
    assert affinity.exchange("benefits", "other-rpc").arguments["alternate-exchange"] == "other-rpc"
    assert affinity.queue_name("benefits", "ab12") == "rpc-benefits-affinity-ab12"
    assert affinity.WEIGHT == "1"


class Keyed:
    def __init__(self, key=None):
        self.key = key

    def with_affinity(self, key):
        return Keyed(key)


class AnyName:
    """Like a nameko service proxy: any attribute is a remote method."""

    def __getattr__(self, name):
        return lambda *a: (name, a)


def test_with_affinity_keys_a_proxy_that_can_and_leaves_others_as_they_are():
    assert affinity.with_affinity(Keyed(), "cmp_1").key == "cmp_1"
    plain = AnyName()
    assert affinity.with_affinity(plain, "cmp_1") is plain
    fake = object()
    assert affinity.with_affinity(fake, "cmp_1") is fake


def test_the_kit_proxy_carries_the_key_to_its_method_proxies():
    from unionhub_kit.rpc import TimedServiceProxy

    class Container:
        config = {"AMQP_URI": "amqp://127.0.0.1:1/"}  # nothing is published here

    class Ctx:
        container = Container()
    proxy = TimedServiceProxy(Ctx(), "benefits", reply_listener=None, timeout=3)
    keyed = affinity.with_affinity(proxy, "cmp_9")
    assert keyed is not proxy and proxy.affinity_key is None
    method = keyed.claim_many
    assert (method.affinity_key, method.timeout, method.method_name) == ("cmp_9", 3, "claim_many")
    assert proxy.claim_many.affinity_key is None
