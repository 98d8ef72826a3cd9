"""The queue workload's client on librdkafka (confluent-kafka), with the
settings a careful user would pick (idempotence on, acks=all) and timeouts
short enough that a fault shows up as an indeterminate (`info`) operation.

Same contract as the kafka-python client: `ok` it happened, `fail` it
certainly did not (nothing left the client), `info` unknown (ClientCrashed:
the worker replaces the client).
"""
from __future__ import annotations

import logging
import threading

from harness.workloads.kafka_python_client import ClientCrashed
from harness.workloads.queue import key_topic_partition, topic_partition_key

log = logging.getLogger(__name__)


class LibrdkafkaClient:
    name = "librdkafka"

    def __init__(self, bootstrap_servers: str, request_timeout: float = 5.0, poll_timeout: float = 0.5,
                 group_id: str | None = None):
        from confluent_kafka import Consumer, Producer
        timeout_ms = int(request_timeout * 1000)
        self.send_timeout = request_timeout * 3
        self.poll_timeout = poll_timeout
        common = {"bootstrap.servers": bootstrap_servers, "socket.timeout.ms": timeout_ms,
                  "reconnect.backoff.max.ms": 1000, "topic.metadata.refresh.interval.ms": 5000,
                  "logger": logging.getLogger("kafka.librdkafka")}
        self.producer = Producer({**common, "enable.idempotence": True, "acks": "all",
                                  "request.timeout.ms": timeout_ms, "message.timeout.ms": timeout_ms * 2,
                                  "linger.ms": 0})
        # librdkafka wants a group id even for manual assignment; nothing is
        # ever committed, so a private one is harmless.
        self.group_id = group_id
        self._consumer_config = {**common, "group.id": group_id or f"hw-assign-{id(self):x}",
                                 "enable.auto.commit": False, "enable.auto.offset.store": False,
                                 "auto.offset.reset": "earliest", "fetch.wait.max.ms": 500,
                                 "session.timeout.ms": 6000, "heartbeat.interval.ms": 1000}
        self.consumer = Consumer(self._consumer_config)
        self._rebalances: list[dict] = []
        self._subscribed = False
        # (topic, partition) -> the offset the last assign started it at: the
        # place to keep when nothing was consumed from it since (librdkafka
        # then reports no position).
        self._assigned_at: dict[tuple[str, int], int] = {}

    def close(self) -> None:
        for closer in (lambda: self.producer.flush(1), self.consumer.close):
            try:
                closer()
            except Exception:
                log.debug("closing client", exc_info=True)

    # --- sends ------------------------------------------------------------------------
    def send(self, mops: list) -> tuple[str, list]:
        from confluent_kafka import KafkaException
        done = threading.Event()
        reports: dict[int, tuple] = {}

        def report(i):
            def on_delivery(err, msg):
                # A duplicate of a retried batch is delivered without an offset
                # (negative: OFFSET_INVALID): unknown, never a negative offset.
                offset = msg.offset() if err is None else None
                reports[i] = (err, offset if offset is not None and offset >= 0 else None)
                if len(reports) == len(mops):
                    done.set()
            return on_delivery

        produced = 0
        for i, (_, key, value) in enumerate(mops):
            topic, partition = key_topic_partition(key)
            try:
                self.producer.produce(topic, value=str(value).encode(), partition=partition,
                                      on_delivery=report(i))
            except (BufferError, KafkaException) as e:
                if produced == 0:  # nothing was handed to librdkafka: certainly not written
                    return "fail", [["send", k, [None, v]] for _, k, v in mops]
                raise ClientCrashed(f"produce {key}={value}: {e!r}") from e
            produced += 1
        remaining = self.send_timeout
        while not done.is_set() and remaining > 0:
            self.producer.poll(min(0.1, remaining))
            remaining -= 0.1
        if not done.is_set():
            raise ClientCrashed(f"no delivery report within {self.send_timeout:.1f}s")
        out = []
        for i, (_, key, value) in enumerate(mops):
            err, offset = reports[i]
            if err is not None:
                # A delivery error after the request may have left: unknown.
                raise ClientCrashed(f"send {key}={value}: {err}")
            out.append(["send", key, [offset, value]])
        return "ok", out

    # --- polls ------------------------------------------------------------------------
    def poll(self) -> tuple[str, list]:
        from confluent_kafka import KafkaError, KafkaException
        # Wait for the first message only, then drain what is already
        # fetched: a poll returns as soon as there is something, as
        # kafka-python's does, instead of always waiting out its timeout.
        first = self.consumer.poll(self.poll_timeout)
        msgs = [] if first is None else [first, *self.consumer.consume(num_messages=999, timeout=0)]
        seen: dict[str, list] = {}
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                raise KafkaException(err)
            key = topic_partition_key(m.topic(), m.partition())
            seen.setdefault(key, []).append([m.offset(), int(m.value())])
        return "ok", [["poll", seen]]

    def read_to_end(self, keys: list[str]) -> list[str]:
        """Keys whose position equals the high watermark of this consumer's
        last fetch (cached watermarks: no extra request)."""
        return list(self._at_watermark(keys, cached=True))

    def ends_reached_now(self, keys: list[str]) -> dict[str, int]:
        """Keys whose position equals the high watermark their leader reports
        to a query sent now (not the cached one of an earlier fetch), with
        that position."""
        return self._at_watermark(keys, cached=False)

    def _at_watermark(self, keys: list[str], cached: bool) -> dict[str, int]:
        from confluent_kafka import TopicPartition
        out = {}
        try:
            positions = self.consumer.position([TopicPartition(*key_topic_partition(k)) for k in keys])
        except Exception:
            log.debug("positions", exc_info=True)
            return out
        for k, tp in zip(keys, positions):
            try:
                _low, high = (self.consumer.get_watermark_offsets(tp, cached=True) if cached else
                              self.consumer.get_watermark_offsets(tp, timeout=self.send_timeout, cached=False))
            except Exception:
                continue
            if tp.offset >= 0 and high >= 0 and tp.offset == high:
                out[k] = high
        return out

    def take_rebalance_log(self) -> list[dict]:
        out, self._rebalances = self._rebalances, []
        return out

    # --- assignment -------------------------------------------------------------------
    def assign(self, keys: list[str], seek_to_beginning: bool = False) -> None:
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition
        if self._subscribed:
            # Leaving a group revokes asynchronously, and a revocation that
            # lands after our assign would undo it: take a fresh consumer.
            from confluent_kafka import Consumer
            self.consumer.close()
            self.consumer = Consumer(self._consumer_config)
            self._subscribed = False
        keep = {}
        if not seek_to_beginning:  # partitions still assigned keep their place
            try:
                for tp in self.consumer.position(self.consumer.assignment()):
                    where = (tp.topic, tp.partition)
                    if tp.offset >= 0:
                        keep[where] = tp.offset
                    elif where in self._assigned_at:
                        # Nothing consumed since the last assign (two
                        # reassignments without a poll between): start where
                        # that assign did, never back at the beginning.
                        keep[where] = self._assigned_at[where]
            except Exception:
                log.debug("positions before reassign", exc_info=True)
        tps = []
        for k in keys:
            topic, partition = key_topic_partition(k)
            tps.append(TopicPartition(topic, partition, keep.get((topic, partition), OFFSET_BEGINNING)))
        self.consumer.assign(tps)
        self._assigned_at = {(tp.topic, tp.partition): tp.offset for tp in tps}

    def subscribe(self, keys: list[str]) -> None:
        if self.group_id is None:
            raise ValueError("subscribe needs the run's consumer group id")
        client = self

        def on_assign(consumer, partitions):
            client._rebalances.append({"type": "assigned", "keys": sorted(
                (topic_partition_key(tp.topic, tp.partition) for tp in partitions), key=int)})

        def on_revoke(consumer, partitions):
            client._rebalances.append({"type": "revoked", "keys": sorted(
                (topic_partition_key(tp.topic, tp.partition) for tp in partitions), key=int)})

        topics = sorted({key_topic_partition(k)[0] for k in keys})
        self.consumer.subscribe(topics, on_assign=on_assign, on_revoke=on_revoke)
        self._subscribed = True
