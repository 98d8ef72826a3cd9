"""DescribeConfigs (32): topic configs as stored at creation, plus the few
broker defaults clients look for. Read-only; nothing here is enforced."""
from kafka.protocol.admin import DescribeConfigsResponse

from reference import errors

API_KEY = 32
TOPIC, BROKER = 2, 4
SOURCE_TOPIC, SOURCE_DEFAULT = 1, 5
Result = DescribeConfigsResponse.DescribeConfigsResult
Config = Result.DescribeConfigsResourceResult

TOPIC_DEFAULTS = {
    "cleanup.policy": "delete",
    "compression.type": "producer",
    "max.message.bytes": "1048588",
    "message.timestamp.type": "CreateTime",
    "retention.ms": "-1",
    "min.insync.replicas": "1",
}


def _configs(values: dict, sources: dict, wanted) -> list:
    names = sorted(values) if not wanted else list(wanted)
    return [Config(name=n, value=values[n], read_only=True, is_default=sources[n] == SOURCE_DEFAULT,
                   config_source=sources[n], is_sensitive=False, synonyms=[], config_type=0, documentation=None)
            for n in names if n in values]


async def handle(request, ctx):
    results = []
    for resource in request.resources:
        if resource.resource_type == TOPIC:
            info = ctx.engine.list_topics().get(resource.resource_name)
            if info is None:
                results.append(Result(error_code=errors.UNKNOWN_TOPIC_OR_PARTITION, error_message="unknown topic",
                                      resource_type=TOPIC, resource_name=resource.resource_name, configs=[]))
                continue
            values = dict(TOPIC_DEFAULTS)
            sources = {n: SOURCE_DEFAULT for n in values}
            for name, value in (info.configs or {}).items():
                values[name], sources[name] = value, SOURCE_TOPIC
            results.append(Result(error_code=0, error_message=None, resource_type=TOPIC,
                                  resource_name=resource.resource_name,
                                  configs=_configs(values, sources, resource.configuration_keys)))
        elif resource.resource_type == BROKER:
            if resource.resource_name not in ("", str(ctx.node_id)):
                results.append(Result(error_code=errors.INVALID_REQUEST, error_message="not this broker",
                                      resource_type=BROKER, resource_name=resource.resource_name, configs=[]))
                continue
            values = {"broker.id": str(ctx.node_id), "num.partitions": str(ctx.default_partitions),
                      "auto.create.topics.enable": str(ctx.auto_create_topics).lower()}
            sources = {n: SOURCE_DEFAULT for n in values}
            results.append(Result(error_code=0, error_message=None, resource_type=BROKER,
                                  resource_name=resource.resource_name,
                                  configs=_configs(values, sources, resource.configuration_keys)))
        else:
            results.append(Result(error_code=errors.INVALID_REQUEST, error_message="unsupported resource type",
                                  resource_type=resource.resource_type, resource_name=resource.resource_name,
                                  configs=[]))
    return DescribeConfigsResponse(version=request.version, throttle_time_ms=0, results=results)
