"""UnionHub shared kit: what every service needs and nothing more.

config      the one table of settings (type, default, env name), read with config.get; validated at start-up
            by the container class; config.timer (interval from a setting); Settings provider
clock       the one notion of "now" (UTC, ms precision, with the test offset)
actors      the caller checks every service makes: require_role, scope_of, require_scope, require_employer
projection  member projections of membership events, with the event-time guard; the kept fields
errors      AppError and its subclasses (problem documents; deserialised across RPC)
ids         resident ID (GB 11643), USCC (GB 32100), mainland phone checks and masking
crypto      keyed hash and encryption of personal data
regions     Sichuan region reference data and prefix rules
schema      marshmallow base schema, shared field types, the list Page (limit, cursor), load()
catalog     every event type and its marshmallow data schema (the event contract)
events      the CloudEvents 1.0 envelope
topology    exchanges, queues, retry/dead-letter queues; declared before anything is published
mongo       the pymongo DependencyProvider; one client per container (a SharedExtension); indexes at start
outbox      transactional outbox + relay that publishes with confirms and retries
consumer    reliable event handler: idempotent, bounded retry with backoff, then dead-letter queue
rpc         @rpc for every RPC entrypoint (AppError expected), and the RPC proxy with a timeout
logs        structured JSON logging with redaction of personal data, codes and tokens
metrics     ServiceMetrics: entrypoint latency/errors, outbox backlog, retries, dead letters; access log; /metrics
idempotency Idempotency-Key handling: the stored result of a keyed request, replayed; key reuse refused
paging      keyset pagination: opaque cursors and {items, next_cursor} pages
tokens      JWT access tokens (issue, verify)
ping        the ping RPC every service answers
broker      RabbitMQ management API helpers (queue depths, peeking dead-letter queues)
cli         the operations CLI: python -m unionhub_kit queues | dlq | outbox | ping | create-account (by RPC)
"""
