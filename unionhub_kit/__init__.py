"""UnionHub shared kit: what every service needs and nothing more.

config      settings from the environment
errors      AppError and its subclasses (problem documents; deserialised across RPC)
ids         resident ID (GB 11643), USCC (GB 32100), mainland phone checks and masking
crypto      keyed hash and encryption of personal data
regions     Sichuan region reference data and prefix rules
schema      marshmallow base schema and the RPC-argument validator
catalog     every event type and its marshmallow data schema (the event contract)
events      the CloudEvents 1.0 envelope
topology    exchanges, queues, retry/dead-letter queues; declared before anything is published
mongo       the pymongo DependencyProvider (one client per container, indexes ensured at start)
outbox      transactional outbox + relay that publishes with confirms and retries
consumer    reliable event handler: idempotent, bounded retry with backoff, then dead-letter queue
rpc         RPC proxy with a timeout
logs        structured JSON logging with redaction of personal data, codes and tokens
metrics     ServiceMetrics: entrypoint latency/errors, outbox backlog, retries, dead letters; access log; /metrics
cli         the operations CLI: python -m unionhub_kit queues | dlq | outbox | ping | create-account
"""
