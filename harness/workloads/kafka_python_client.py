"""The queue workload's client on kafka-python 3.0, with its defaults
(idempotence on, acks=all) and timeouts short enough that a fault shows up
as an indeterminate (`info`) operation rather than a stall.

Completion types follow Jepsen: `ok` it happened, `fail` it certainly did not
(the request never left the client), `info` unknown.
"""
from __future__ import annotations

import logging

from harness.workloads.queue import key_topic_partition, topic_partition_key

log = logging.getLogger(__name__)


class ClientCrashed(Exception):
    """The client is in an unknown state; the worker replaces it."""


class KafkaPythonClient:
    name = "kafka-python"

    def __init__(self, bootstrap_servers: str, request_timeout: float = 5.0, poll_timeout: float = 0.5,
                 group_id: str | None = None):
        from kafka import KafkaConsumer, KafkaProducer
        timeout_ms = int(request_timeout * 1000)
        self.send_timeout = request_timeout * 3
        self.poll_timeout_ms = int(poll_timeout * 1000)
        # bootstrap bounded like a request: its 30 s default kept a worker
        # (and the final polls) blocked long after a down cluster's deadline
        common = dict(bootstrap_servers=bootstrap_servers, request_timeout_ms=timeout_ms,
                      reconnect_backoff_max_ms=1000, bootstrap_timeout_ms=timeout_ms)
        self.producer = KafkaProducer(max_block_ms=timeout_ms, delivery_timeout_ms=timeout_ms * 2,
                                      **common)
        # A group only for --sub-via subscribe; offsets are never committed
        # (every poll is judged from the positions the broker hands out).
        self.consumer = KafkaConsumer(group_id=group_id, enable_auto_commit=False, auto_offset_reset="earliest",
                                      fetch_max_wait_ms=min(500, self.poll_timeout_ms),
                                      **common)
        self._rebalances: list[dict] = []

    def close(self) -> None:
        for closer in (lambda: self.producer.close(timeout=1), lambda: self.consumer.close()):
            try:
                closer()
            except Exception:
                log.debug("closing client", exc_info=True)

    def send(self, mops: list) -> tuple[str, list]:
        """One or more sends; returns (type, completed micro-ops)."""
        from kafka.errors import KafkaError
        futures = []
        for _, key, value in mops:
            topic, partition = key_topic_partition(key)
            try:
                futures.append(self.producer.send(topic, value=str(value).encode(), partition=partition))
            except KafkaError as e:
                if not futures:  # nothing left the client: certainly not written
                    return "fail", [["send", key, [None, value]] for _, key, value in mops]
                raise ClientCrashed(str(e)) from e
        done = []
        for (_, key, value), future in zip(mops, futures):
            try:
                meta = future.get(timeout=self.send_timeout)
            except Exception as e:
                raise ClientCrashed(f"send {key}={value}: {e!r}") from e
            # A retried batch the broker answers DUPLICATE_SEQUENCE_NUMBER counts
            # as written, but the ack carries no offset (-1): unknown, not -1.
            done.append(["send", key, [meta.offset if meta.offset >= 0 else None, value]])
        return "ok", done

    def poll(self) -> tuple[str, list]:
        records = self.consumer.poll(timeout_ms=self.poll_timeout_ms)
        seen: dict[str, list] = {}
        for tp, batch in records.items():
            key = topic_partition_key(tp.topic, tp.partition)
            seen.setdefault(key, []).extend([r.offset, int(r.value)] for r in batch)
        return "ok", [["poll", seen]]

    def read_to_end(self, keys: list[str]) -> list[str]:
        """Of keys, those whose position has reached the high watermark the
        broker last reported: what was polled of them ran to the log's end
        (as of a fetch this consumer made). Unknown positions count as not."""
        from kafka import TopicPartition
        out = []
        for k in keys:
            tp = TopicPartition(*key_topic_partition(k))
            try:
                hw = self.consumer.highwater(tp)
                if hw is not None and self.consumer.position(tp, timeout_ms=1000) == hw:
                    out.append(k)
            except Exception:
                log.debug("position of %s", k, exc_info=True)
        return out

    def ends_reached_now(self, keys: list[str]) -> dict[str, int]:
        """Of keys, those whose position equals the end offset their leader
        (as this consumer knows it) reports to a ListOffsets sent now, with
        that position: what was polled of them reached the log's end at a
        moment after this call began, so while writes go on (unlike
        read_to_end's cached watermark, which a fetch made before the poll
        may have set)."""
        from kafka import TopicPartition
        tps = {k: TopicPartition(*key_topic_partition(k)) for k in keys}
        try:
            ends = self.consumer.end_offsets(list(tps.values()))
        except Exception:
            log.debug("end offsets of %s", keys, exc_info=True)
            return {}
        out = {}
        for k, tp in tps.items():
            try:
                if ends.get(tp) is not None and self.consumer.position(tp, timeout_ms=1000) == ends[tp]:
                    out[k] = ends[tp]
            except Exception:
                log.debug("position of %s", k, exc_info=True)
        return out

    def take_rebalance_log(self) -> list[dict]:
        """Rebalances since the last call (Jepsen's :rebalance-log of a poll)."""
        out, self._rebalances = self._rebalances, []
        return out

    def subscribe(self, keys: list[str]) -> None:
        """Join the run's consumer group for the keys' topics; the group hands
        out partitions (rebalances are logged for the next poll)."""
        from kafka import ConsumerRebalanceListener

        client = self

        class Listener(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked):
                client._rebalances.append({"type": "revoked", "keys": sorted(
                    (topic_partition_key(tp.topic, tp.partition) for tp in revoked), key=int)})

            def on_partitions_assigned(self, assigned):
                client._rebalances.append({"type": "assigned", "keys": sorted(
                    (topic_partition_key(tp.topic, tp.partition) for tp in assigned), key=int)})

        topics = sorted({key_topic_partition(k)[0] for k in keys})
        self.consumer.subscribe(topics=topics, listener=Listener())

    def assign(self, keys: list[str], seek_to_beginning: bool = False) -> None:
        from kafka import TopicPartition
        tps = [TopicPartition(*key_topic_partition(k)) for k in keys]
        if self.consumer.subscription():  # kafka-python refuses assign while subscribed
            self.consumer.unsubscribe()
        self.consumer.assign(tps)
        if seek_to_beginning and tps:
            self.consumer.seek_to_beginning(*tps)

    def positions(self, keys: list[str]) -> dict[str, int]:
        from kafka import TopicPartition
        out = {}
        for k in keys:
            try:
                out[k] = self.consumer.position(TopicPartition(*key_topic_partition(k)), timeout_ms=1000)
            except Exception:
                pass
        return out


def create_topics(bootstrap_servers: str, topics: list[str], timeout: float = 10.0) -> None:
    """Create topics (PARTITIONS_PER_TOPIC each), tolerating ones that exist."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError
    from harness.workloads.queue import PARTITIONS_PER_TOPIC
    admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=int(timeout * 1000))
    try:
        try:
            admin.create_topics([NewTopic(t, PARTITIONS_PER_TOPIC, 1) for t in topics])
        except TopicAlreadyExistsError:
            pass
    finally:
        admin.close()
