"""Dev tooling, never loaded by a backfill: the fault-injecting proxy and its provider profiles,
a local anvil node, seeding, the offline demo, and the check of stored rows against the node."""
