"""Before the tests: RabbitMQ answers (started if installed and down) and its management and consistent-hash exchange
plugins are enabled (``deploy.stack.enable_management``)."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import requests  # noqa: E402

from deploy.stack import enable_management, ensure_rabbitmq  # noqa: E402
from unionhub_kit import config  # noqa: E402

if not ensure_rabbitmq(config.get("AMQP_URI")):
    sys.exit(2)


def exchange_types():
    """The exchange types the broker knows (its management API), or None while the API does not answer."""
    try:
        r = requests.get("http://localhost:15672/api/overview", auth=("guest", "guest"), timeout=2)
    except requests.RequestException:
        return None
    return {t["name"] for t in r.json().get("exchange_types", [])} if r.ok else None


for attempt in range(60):
    types = exchange_types()
    if types is not None and "x-consistent-hash" in types:
        break
    if attempt == 0:
        enable_management()  # both plugins (a no-op for one already enabled)
    time.sleep(1)
else:
    if types is None:
        print("the RabbitMQ management API (15672) does not answer; nameko's test fixtures need it")
        sys.exit(2)
    # the services still work without it (a campaign's claims take the shared RPC queue); the affinity tests fail
    print("RabbitMQ has no x-consistent-hash exchange type (rabbitmq-plugins enable "
          "rabbitmq_consistent_hash_exchange): RPC affinity is off")
