"""Deterministic simulation of the reference cluster (`highwater sim`): the
real broker code in one process under a seeded scheduler with virtual time,
on simulated disks, S3 and network; every run replays from its seed."""
