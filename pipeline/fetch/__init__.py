"""Fetching: one worker per endpoint, its RPC transport, error classification, parsing and
validation of answers, and its learned policies (rate, health, request window)."""
