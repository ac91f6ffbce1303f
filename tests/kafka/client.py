#!/usr/bin/python3
"""The tests' independent Kafka client (Debian's python3-kafka, kafka-python: pure Python).

    client.py BROKER consume TOPIC   every message from the beginning, one "key<TAB>value"
                                     line each, once no message came for 3 s
    client.py BROKER produce TOPIC   each line of standard input as a message, no key
"""
import sys

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

broker, mode, topic = sys.argv[1:4]
# Pinned protocol versions: no version probe, which brokers answer differently.
API = (2, 0, 0)
if mode == "consume":
    c = KafkaConsumer(bootstrap_servers=broker, api_version=API, enable_auto_commit=False,
                      auto_offset_reset="earliest", consumer_timeout_ms=3000)
    parts = c.partitions_for_topic(topic)
    if not parts:
        sys.exit(f"{broker}: no topic {topic}")
    tps = [TopicPartition(topic, p) for p in sorted(parts)]
    c.assign(tps)
    c.seek_to_beginning(*tps)
    out = sys.stdout
    for m in c:
        out.write((m.key or b"").decode() + "\t" + (m.value or b"").decode() + "\n")
    out.flush()
elif mode == "produce":
    p = KafkaProducer(bootstrap_servers=broker, api_version=API, acks="all")
    for line in sys.stdin:
        line = line.rstrip("\n")
        if line:
            p.send(topic, value=line.encode()).get(timeout=30)
    p.flush()
else:
    sys.exit(f"unknown mode {mode}")
