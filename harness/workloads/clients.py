"""The workload's clients, keyed by `--client`. Each wraps one real Kafka
client library and speaks the same small interface to the runner:
send(mops), poll(), assign(keys, seek_to_beginning), subscribe(keys),
read_to_end(keys), ends_reached_now(keys) (key -> its position, for keys
whose leader reports that position as the end to a query sent now),
take_rebalance_log(), close()."""
from __future__ import annotations

import importlib

CLIENTS = {
    "kafka-python": "harness.workloads.kafka_python_client:KafkaPythonClient",
    "librdkafka": "harness.workloads.librdkafka_client:LibrdkafkaClient",
}


def client_class(name: str):
    try:
        module, _, cls = CLIENTS[name].partition(":")
    except KeyError:
        raise ValueError(f"--client {name!r}: unknown client; known: {', '.join(CLIENTS)}") from None
    try:
        return getattr(importlib.import_module(module), cls)
    except ImportError as e:
        raise ValueError(f"--client {name}: its library is not installed ({e}); "
                         f"install the test extras: ./setup.sh --test") from None
