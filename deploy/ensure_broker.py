"""Before the tests: RabbitMQ answers (started if installed and down) and its management plugin is enabled."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import requests  # noqa: E402

from deploy.stack import enable_management, ensure_rabbitmq  # noqa: E402
from unionhub_kit import config  # noqa: E402

if not ensure_rabbitmq(config.get("AMQP_URI")):
    sys.exit(2)
for attempt in range(60):
    try:
        if requests.get("http://localhost:15672/api/overview", auth=("guest", "guest"), timeout=2).ok:
            break
    except requests.RequestException:
        pass
    if attempt == 0:
        enable_management()
    time.sleep(1)
else:
    print("the RabbitMQ management API (15672) does not answer; nameko's test fixtures need it")
    sys.exit(2)
