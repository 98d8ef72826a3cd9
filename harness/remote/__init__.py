"""Nodes the harness drives over SSH: remote machines from an inventory
(`inventory`, `ssh`) and network namespaces on this machine (`netns`), both
through the same paramiko code."""
