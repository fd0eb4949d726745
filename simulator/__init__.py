"""The SimPy simulator world: replays traces against a cluster and a profile (issue 4)."""
