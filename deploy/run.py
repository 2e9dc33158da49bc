"""``make run``: the whole stack on this machine, until Ctrl-C.

A process that exits is started again with backoff (``deploy.stack.Supervisor``); everything stops on Ctrl-C, or when
one process exits more than 5 times within a minute."""
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from deploy.stack import ROOT, Stack, Supervisor, ensure_rabbitmq  # noqa: E402
from unionhub_kit import config, keys, topology  # noqa: E402


def metrics_note(url):
    """Where metrics are: each process on METRICS_PORT (and up), never on the public port without a scrape token."""
    port, token = os.environ.get("METRICS_PORT"), os.environ.get("METRICS_TOKEN")
    where = ["each process on 127.0.0.1:%s and up (its log says which)" % port] if port and port != "0" else []
    if token:
        where.append("%s/metrics with Authorization: Bearer $METRICS_TOKEN" % url)
    return "; ".join(where) or "off (set METRICS_PORT, or METRICS_TOKEN for the gateway's /metrics)"


def main():
    # make run is development (the published development secret) unless told otherwise; any other start is production
    os.environ.setdefault("UNIONHUB_ENV", "development")
    os.environ.setdefault("METRICS_PORT", "9100")  # metrics off the public port: each process on its own
    why = keys.problem()
    if why:
        sys.exit("unionhub: refusing to start in %s: %s" % (keys.environment(), why))
    print("environment: %s%s" % (keys.environment(), " (the published development secret: never for production)"
                                 if keys.is_development() else ""))
    env = {}
    amqp = config.get("AMQP_URI")
    if not ensure_rabbitmq(amqp):
        sys.exit(2)
    stack = Stack(env)
    stopping = []

    def on_signal(signum, frame):
        stopping.append(signum)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        if not os.environ.get("MONGO_URI"):
            port = int(os.environ.get("STORE_PORT", "27217"))
            data = os.environ.get("STORE_DIR", os.path.join(ROOT, "var", "store"))
            print("store: SecantusDB on 127.0.0.1:%d, data in %s" % (port, os.path.relpath(data, ROOT)))
            stack.env["MONGO_URI"] = stack.start_store(data, port)
        topology.declare_uri(amqp)
        if not os.environ.get("UNIONHUB_ADMIN_PASSWORD"):
            print("note: UNIONHUB_ADMIN_PASSWORD is not set; the bootstrap account 'admin' is not created")
        started = time.time()
        stack.start_services()
        print("services: %s (logs in var/log/)" % ", ".join(
            "%s x%d" % (n, len(ps)) for n, ps in stack.procs.items()))
        stack.wait_ready(timeout=120)
        url = stack.gateway_url()
        print("\nUnionHub is ready in %.1fs\n  gateway  %s\n  API docs %s/docs  (%s/openapi.json)\n"
              "  events   %s/asyncapi.json\n  health   %s/readyz\n  metrics  %s\n"
              "  broker   http://localhost:15672 (guest/guest)\nCtrl-C stops everything started here.\n"
              % (time.time() - started, url, url, url, url, url, metrics_note(url)))
        sys.stdout.flush()
        supervisor = Supervisor(stack, say=lambda msg: print("%s %s (logs in var/log/)" % (
            time.strftime("%H:%M:%S"), msg), flush=True))
        while not stopping:
            why = supervisor.check()
            if why:
                print("%s; stopping everything" % why)
                stopping.append(0)
            time.sleep(0.5)
    except Exception as exc:
        print("error: %s" % exc)
        stopping.append(1)
    finally:
        print("stopping ...")
        stack.stop()
        print("stopped.")


if __name__ == "__main__":
    main()
