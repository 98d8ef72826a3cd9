"""Consumer groups with real clients: two consumers share a topic, one
leaves, the other takes over its partitions, committed offsets are where a
new consumer of the group resumes (after a broker restart when the storage
is durable)."""
from __future__ import annotations

import time

import pytest

from test_clients import DURABLE, broker, create_topic, storage_args  # noqa: F401  (fixtures)

PARTITIONS = 4


def produce_values(bootstrap, topic, values):
    from kafka import KafkaProducer
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    for v in values:
        producer.send(topic, value=str(v).encode(), partition=v % PARTITIONS)
    producer.flush(30)
    producer.close()


class Ledger:
    """What the consumers saw, per partition, as (offset, value)."""

    def __init__(self):
        self.seen: dict[int, list] = {p: [] for p in range(PARTITIONS)}

    def add(self, partition, offset, value):
        self.seen[partition].append((offset, int(value)))

    def values(self):
        return sorted(v for records in self.seen.values() for _, v in records)

    def assert_exactly_once(self, expected):
        assert self.values() == sorted(expected)
        for partition, records in self.seen.items():
            offsets = [o for o, _ in records]
            assert offsets == sorted(set(offsets)), f"partition {partition} re-read or reordered"


def wait_until(condition, timeout, step):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        step()
        if condition():
            return True
    return False


# --- kafka-python -----------------------------------------------------------------

def kp_consumer(bootstrap, group):
    from kafka import KafkaConsumer
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest",
                             enable_auto_commit=False)
    consumer.subscribe(["grp"])
    return consumer


def kp_poll(consumer, ledger, timeout_ms=200):
    batch = consumer.poll(timeout_ms=timeout_ms)
    for tp, messages in batch.items():
        for m in messages:
            ledger.add(tp.partition, m.offset, m.value)
    if batch:
        consumer.commit()  # synchronous, before the next poll can rebalance


def test_kafka_python_group_share_leave_take_over_resume(broker):
    create_topic(broker.bootstrap, "grp", PARTITIONS)
    produce_values(broker.bootstrap, "grp", range(2000))
    ledger = Ledger()
    first, second = kp_consumer(broker.bootstrap, "kp-group"), kp_consumer(broker.bootstrap, "kp-group")
    try:
        def both_step():
            kp_poll(first, ledger)
            kp_poll(second, ledger)
        shared = wait_until(lambda: first.assignment() and second.assignment()
                            and len(first.assignment() | second.assignment()) == PARTITIONS, 30, both_step)
        assert shared, (first.assignment(), second.assignment())
        assert not first.assignment() & second.assignment()
        assert wait_until(lambda: len(ledger.values()) >= 2000, 30, both_step)
        first.close()  # LeaveGroup: no session timeout to wait out
        assert wait_until(lambda: len(second.assignment()) == PARTITIONS, 30, lambda: kp_poll(second, ledger))
        produce_values(broker.bootstrap, "grp", range(2000, 2400))
        assert wait_until(lambda: len(ledger.values()) >= 2400, 30, lambda: kp_poll(second, ledger))
    finally:
        first.close()
        second.close()
    ledger.assert_exactly_once(range(2400))
    if DURABLE:
        broker.restart()
    produce_values(broker.bootstrap, "grp", range(2400, 2500))
    resumed = Ledger()
    third = kp_consumer(broker.bootstrap, "kp-group")
    try:
        assert wait_until(lambda: len(resumed.values()) >= 100, 30, lambda: kp_poll(third, resumed))
        time.sleep(0.3)
        kp_poll(third, resumed)
    finally:
        third.close()
    resumed.assert_exactly_once(range(2400, 2500))  # from the committed offsets, nothing re-read


# --- confluent-kafka ----------------------------------------------------------------

def ck_consumer(bootstrap, group):
    from confluent_kafka import Consumer
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
                         "enable.auto.commit": False})
    consumer.subscribe(["grp"])
    return consumer


def ck_poll(consumer, ledger):
    messages = consumer.consume(num_messages=500, timeout=0.2)
    for m in messages:
        assert m.error() is None, m.error()
        ledger.add(m.partition(), m.offset(), m.value())
    if messages:
        consumer.commit(asynchronous=False)


def ck_assigned(consumer) -> set:
    return {tp.partition for tp in consumer.assignment()}


def test_confluent_kafka_group_share_leave_take_over_resume(broker):
    create_topic(broker.bootstrap, "grp", PARTITIONS)
    produce_values(broker.bootstrap, "grp", range(2000))
    ledger = Ledger()
    first, second = ck_consumer(broker.bootstrap, "ck-group"), ck_consumer(broker.bootstrap, "ck-group")
    closed = set()
    try:
        def both_step():
            ck_poll(first, ledger)
            ck_poll(second, ledger)
        shared = wait_until(lambda: ck_assigned(first) and ck_assigned(second)
                            and len(ck_assigned(first) | ck_assigned(second)) == PARTITIONS, 30, both_step)
        assert shared
        assert not ck_assigned(first) & ck_assigned(second)
        assert wait_until(lambda: len(ledger.values()) >= 2000, 30, both_step)
        first.close()
        closed.add(id(first))
        assert wait_until(lambda: len(ck_assigned(second)) == PARTITIONS, 30, lambda: ck_poll(second, ledger))
        produce_values(broker.bootstrap, "grp", range(2000, 2400))
        assert wait_until(lambda: len(ledger.values()) >= 2400, 30, lambda: ck_poll(second, ledger))
    finally:
        for c in (first, second):
            if id(c) not in closed:
                c.close()
    ledger.assert_exactly_once(range(2400))
    if DURABLE:
        broker.restart()
    produce_values(broker.bootstrap, "grp", range(2400, 2500))
    resumed = Ledger()
    third = ck_consumer(broker.bootstrap, "ck-group")
    try:
        assert wait_until(lambda: len(resumed.values()) >= 100, 30, lambda: ck_poll(third, resumed))
        ck_poll(third, resumed)
    finally:
        third.close()
    resumed.assert_exactly_once(range(2400, 2500))
