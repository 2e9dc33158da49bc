"""The ``ping`` RPC every service answers (the gateway's /readyz calls it)."""


def ping(service_name, db):
    db.command("ping")
    return {"service": service_name, "ok": True}
