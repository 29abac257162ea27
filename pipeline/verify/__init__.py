"""Verifying answers before they are stored: near the head an answer must prove its backend has
the blocks (headproof), every stored block hash is confirmed against headers from another
endpoint, logs are held against their blocks' blooms, and a share of tasks is fetched again
elsewhere and compared row for row (verifier, audit, trust)."""
