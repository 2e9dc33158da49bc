"""The ``ping`` RPC every service answers (the gateway's /readyz calls it).

The answer names the replica that answered (``UNIONHUB_REPLICA`` set by ``deploy/stack.py``; in a container the
host name), so ops and the scaling test can see several replicas share one RPC queue.
"""
import os
import socket


def ping(service_name, db):
    db.command("ping")
    return {"service": service_name, "ok": True,
            "replica": os.environ.get("UNIONHUB_REPLICA") or socket.gethostname(), "pid": os.getpid()}
