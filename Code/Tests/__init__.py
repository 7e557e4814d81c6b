"""Parley's test suite: one test_<module>.py per module, helpers in helpers.py."""
