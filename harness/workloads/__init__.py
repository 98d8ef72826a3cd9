"""Workloads: each is a generator (what to do), a client (how to do it with a
real Kafka client) and the checkers that judge the history."""
