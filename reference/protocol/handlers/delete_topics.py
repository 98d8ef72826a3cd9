"""DeleteTopics (20)."""
from kafka.protocol.admin import DeleteTopicsResponse

from reference import errors
from reference.errors import KafkaError

API_KEY = 20


async def handle(request, ctx):
    results = []
    for name in request.topic_names:
        code, message = errors.NONE, None
        try:
            await ctx.engine.delete_topic(name)
        except KafkaError as exc:
            code, message = exc.code, str(exc)
        results.append(DeleteTopicsResponse.DeletableTopicResult(name=name, error_code=code, error_message=message))
    return DeleteTopicsResponse(version=request.version, throttle_time_ms=0, responses=results)
