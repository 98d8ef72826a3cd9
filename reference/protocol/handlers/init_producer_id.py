"""InitProducerId (22): a fresh idempotent producer id, epoch 0.

Transactions are not supported (no transaction coordinator and no txn APIs
advertised), so a transactional id is refused rather than half-served."""
from kafka.protocol.producer import InitProducerIdResponse

from reference.protocol.context import TRANSACTIONAL_ID_AUTHORIZATION_FAILED

API_KEY = 22


async def handle(request, ctx):
    if request.transactional_id is not None:
        return InitProducerIdResponse(version=request.version, throttle_time_ms=0,
                                      error_code=TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
                                      producer_id=-1, producer_epoch=-1)
    producer_id = await ctx.engine.allocate_producer_id()
    return InitProducerIdResponse(version=request.version, throttle_time_ms=0, error_code=0,
                                  producer_id=producer_id, producer_epoch=0)
