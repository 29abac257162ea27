"""Reporting: statistics and summary.json, the console, metrics, the timeline, folder status."""
