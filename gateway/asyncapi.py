"""AsyncAPI 3 document of every event (AMQP 0-9-1 binding), generated from ``unionhub_kit.catalog``."""
from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin

from unionhub_kit import catalog, events, topology


def _schema_json(schema_cls):
    spec = APISpec(title="x", version="1", openapi_version="3.0.3", plugins=[MarshmallowPlugin()])
    plugin = spec.plugins[0]
    return plugin.converter.schema2jsonschema(schema_cls)


def build():
    envelope = _schema_json(events.Envelope)
    channels, operations, messages = {}, {}, {}
    for (service, event), (schema, summary) in sorted(catalog.EVENTS.items()):
        key = "%s.%s" % (service, event)
        msg_name = "%s_%s" % (service, event)
        payload = dict(envelope)
        payload = {"type": "object", "properties": dict(envelope.get("properties", {})),
                   "required": envelope.get("required", [])}
        payload["properties"]["type"] = {"type": "string", "const": catalog.event_type(service, event)}
        payload["properties"]["source"] = {"type": "string", "const": "/unionhub/%s" % service}
        payload["properties"]["data"] = _schema_json(schema)
        messages[msg_name] = {"name": catalog.event_type(service, event), "title": key, "summary": summary,
                              "contentType": "application/json", "payload": payload,
                              "bindings": {"amqp": {"contentEncoding": "utf-8", "messageType": event,
                                                    "bindingVersion": "0.3.0"}}}
        channels[key] = {
            "address": event,
            "description": "Exchange `%s` (topic, durable), routing key `%s`." % (topology.exchange_name(service),
                                                                                   event),
            "messages": {msg_name: {"$ref": "#/components/messages/%s" % msg_name}},
            "bindings": {"amqp": {"is": "routingKey", "exchange": {"name": topology.exchange_name(service),
                                                                    "type": "topic", "durable": True,
                                                                    "autoDelete": False, "vhost": "/"},
                                  "bindingVersion": "0.3.0"}},
        }
        operations["publish_%s" % msg_name] = {
            "action": "send", "channel": {"$ref": "#/channels/%s" % key},
            "summary": "%s publishes %s (through its outbox, at least once)." % (service, event),
            "bindings": {"amqp": {"deliveryMode": 2, "bindingVersion": "0.3.0"}},
            "messages": [{"$ref": "#/channels/%s/messages/%s" % (key, msg_name)}]}
    return {
        "asyncapi": "3.0.0",
        "info": {"title": "UnionHub events", "version": "1.0.0",
                 "description": "CloudEvents 1.0 structured JSON on `<service>.events` topic exchanges. Delivery is "
                                "at least once; consumers record (source, id). Bind your own durable queue to an "
                                "exchange, or register a webhook."},
        "defaultContentType": "application/json",
        "servers": {"rabbitmq": {"host": "localhost:5672", "protocol": "amqp", "protocolVersion": "0.9.1"}},
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    }
