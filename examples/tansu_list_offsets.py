"""Reproduce the ListOffsets(latest) answer of Tansu 0.6.0 (S3 engine): after
N records in a partition, the "latest" offset (the log end: N) comes back
smaller, so a consumer that starts at the end (auto.offset.reset=latest,
seek_to_end) re-reads the tail, and lag looks smaller than it is. The
Fetch high watermark is right; both kafka-python and librdkafka see it.

    python3 examples/tansu_list_offsets.py [--records 20]

Exit 1 if the log end offset is wrong.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=20)
    a = p.parse_args()
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from harness.db.tansu import TansuTarget
    from harness.workloads.kafka_python_client import create_topics

    work = Path(tempfile.mkdtemp(prefix="tansu-list-offsets-"))
    target = TansuTarget(work)
    try:
        target.setup()
        bootstrap = target.bootstrap_servers
        create_topics(bootstrap, ["lo"])
        tp = TopicPartition("lo", 0)
        producer = KafkaProducer(bootstrap_servers=bootstrap)
        last = [producer.send("lo", value=str(i).encode(), partition=0).get(10).offset
                for i in range(a.records)][-1]
        producer.close()
        consumer = KafkaConsumer(bootstrap_servers=bootstrap)
        end = consumer.end_offsets([tp])[tp]
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        while consumer.position(tp) <= last:
            consumer.poll(500)
        high = consumer.highwater(tp)
        consumer.close()
        print(f"{a.records} records acked at offsets 0..{last}: ListOffsets(latest) = {end}, "
              f"Fetch high watermark = {high} (both should be {last + 1})")
        return 0 if end == last + 1 else 1
    finally:
        target.teardown()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
