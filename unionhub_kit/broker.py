"""RabbitMQ management API helpers (queue depths, peeking dead-letter queues) for ops tooling and tests."""
import urllib.parse

import requests

from . import config


def api_base():
    return config.get("RABBIT_API_URI")


def _url(path):
    u = urllib.parse.urlparse(api_base())
    return "%s://%s:%s/api/%s" % (u.scheme, u.hostname, u.port or 15672, path), (u.username or "guest",
                                                                             u.password or "guest")


def vhost_of(amqp_uri):
    path = urllib.parse.urlparse(amqp_uri).path.lstrip("/")
    return urllib.parse.unquote(path) or "/"


def get_messages(vhost, queue, count=10, requeue=True):
    """Read up to ``count`` messages (requeued unless ``requeue`` is False)."""
    url, auth = _url("queues/%s/%s/get" % (urllib.parse.quote(vhost, safe=""), urllib.parse.quote(queue, safe="")))
    r = requests.post(url, auth=auth, timeout=10, json={
        "count": count, "encoding": "auto", "ackmode": "ack_requeue_true" if requeue else "ack_requeue_false"})
    if r.status_code == 404:
        return []
    r.raise_for_status()
    return r.json()


def queues(vhost):
    url, auth = _url("queues/%s" % urllib.parse.quote(vhost, safe=""))
    r = requests.get(url, auth=auth, timeout=10)
    r.raise_for_status()
    return r.json()
