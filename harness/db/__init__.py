"""Cluster lifecycle adapters ("db" in Jepsen's sense): set up a system under
test, expose its nodes to the nemeses, tear it down leaving nothing behind."""
