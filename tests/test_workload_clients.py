"""The workload's two clients (kafka-python, librdkafka) behind one interface,
against a real broker: sends come back with offsets, polls read them in
order, assign/subscribe hand out keys, read_to_end knows the log's end,
and a subscribing consumer logs its rebalances."""
from __future__ import annotations

import random
import time
from collections import Counter

import pytest

from harness.workloads.clients import CLIENTS, client_class
from harness.workloads.kafka_python_client import create_topics
from harness.workloads.queue import QueueGenerator
from tests.test_clients import BrokerProcess, storage_args  # noqa: F401  (fixture)


@pytest.fixture
def broker(tmp_path, storage_args):  # noqa: F811
    process = BrokerProcess(tmp_path, storage_args)
    process.start()
    yield process
    process.kill()


def _poll_until(client, key, count, timeout=20.0):
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        type_, value = client.poll()
        assert type_ == "ok"
        got.extend(value[0][1].get(key, []))
    return got


@pytest.mark.timeout(90)
@pytest.mark.parametrize("name", sorted(CLIENTS))
def test_client_sends_polls_and_reads_to_end(broker, name):
    create_topics(broker.bootstrap, ["hw-0", "hw-1"])
    client = client_class(name)(broker.bootstrap, request_timeout=5.0, group_id=f"g-{name}")
    try:
        sent = []
        for value in range(1, 11):
            type_, done = client.send([["send", "1", value]])
            assert type_ == "ok" and done[0][:2] == ["send", "1"]
            sent.append(done[0][2])
        assert [o for o, _ in sent] == list(range(10))       # offsets as the broker assigned them
        client.assign(["1"], seek_to_beginning=True)
        got = _poll_until(client, "1", 10)
        assert [list(p) for p in got] == [list(p) for p in sent]
        assert client.read_to_end(["1"]) == ["1"]
        client.send([["send", "1", 11]])
        # a key whose end moved on is no longer read to the end once the
        # consumer learns the new high watermark... and is again after reading it
        assert _poll_until(client, "1", 1) == [[10, 11]]
        assert client.read_to_end(["1"]) == ["1"]
        assert client.ends_reached_now(["1"]) == {"1": 11}      # with the position that is the end
        client.send([["send", "1", 12]])
        # asked now, the leader's end is past the position, cached watermark or not
        assert client.ends_reached_now(["1"]) == {}
    finally:
        client.close()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", sorted(CLIENTS))
def test_subscribe_takes_partitions_from_the_group_and_logs_rebalances(broker, name):
    create_topics(broker.bootstrap, ["hw-0"])
    group = f"sub-{name}-{random.randrange(1 << 30)}"
    producer = client_class(name)(broker.bootstrap, group_id=group)
    consumer = client_class(name)(broker.bootstrap, group_id=group)
    try:
        for key, value in (("0", 1), ("1", 1), ("0", 2)):
            assert producer.send([["send", key, value]])[0] == "ok"
        consumer.subscribe(["0", "1"])
        seen: dict[str, list] = {}
        deadline = time.monotonic() + 60
        while sum(map(len, seen.values())) < 3 and time.monotonic() < deadline:
            for key, pairs in consumer.poll()[1][0][1].items():
                seen.setdefault(key, []).extend(pairs)
        assert seen == {"0": [[0, 1], [1, 2]], "1": [[0, 1]]}
        log = consumer.take_rebalance_log()
        assert any(ev["type"] == "assigned" and set(ev["keys"]) == {"0", "1"} for ev in log), log
        assert consumer.take_rebalance_log() == []            # taken once
        consumer.assign(["1"], seek_to_beginning=True)        # back from subscribe to assign
        assert _poll_until(consumer, "1", 1) == [[0, 1]]
    finally:
        producer.close()
        consumer.close()


def test_zipf_spread_favours_the_first_keys():
    uniform = QueueGenerator(random.Random(1), active_keys=8, max_writes_per_key=10**9)
    zipf = QueueGenerator(random.Random(1), active_keys=8, max_writes_per_key=10**9, key_dist="zipf")

    def spread(gen):
        return Counter(op.value[0][1] for op in (gen.next_op() for _ in range(8000)) if op.f == "send")
    u, z = spread(uniform), spread(zipf)
    assert max(u.values()) < 1.3 * min(u.values())
    assert z["0"] > 4 * z["7"] and z["0"] > z["1"] > z["3"]
    assert set(z) == {str(k) for k in range(8)}               # cold keys still written


def test_unknown_client_is_refused_by_name():
    with pytest.raises(ValueError, match="known: kafka-python, librdkafka"):
        client_class("sarama")


def test_produce_workload_sends_batches_only_and_retires_keys_on_time():
    gen = QueueGenerator(random.Random(2), active_keys=2, max_writes_per_key=25, produce_only=True, send_batch=10)
    ops = [gen.next_op() for _ in range(40)]
    assert all(op.f == "send" for op in ops)
    per_key: dict[str, list[int]] = {}
    for op in ops:
        assert 1 <= len(op.value) <= 10 and len({m[1] for m in op.value}) == 1
        per_key.setdefault(op.value[0][1], []).extend(m[2] for m in op.value)
    for key, values in per_key.items():
        assert values == list(range(1, len(values) + 1)) and len(values) <= 25   # unique, increasing, capped
    assert len(per_key) > 2                                                     # keys retired and replaced


@pytest.mark.timeout(90)
@pytest.mark.parametrize("name", sorted(CLIENTS))
def test_back_to_back_reassignments_keep_a_kept_partition_in_place(broker, name):
    """Two assigns with no poll between (keys retiring fast): a partition in
    both keeps its position; it never goes back to the beginning, which the
    checker would rightly call a nonmonotonic poll."""
    create_topics(broker.bootstrap, ["hw-0", "hw-1"])
    client = client_class(name)(broker.bootstrap, request_timeout=5.0)
    try:
        for value in range(1, 6):
            assert client.send([["send", "1", value]])[0] == "ok"
        client.assign(["1"], seek_to_beginning=True)
        assert [v for _, v in _poll_until(client, "1", 5)] == [1, 2, 3, 4, 5]
        assert client.send([["send", "1", 6]])[0] == "ok"
        client.assign(["1", "2"])
        client.assign(["1", "3"])
        assert _poll_until(client, "1", 1) == [[5, 6]]
    finally:
        client.close()
