"""Diagnostics that show the papers' claims (state sink for SinkRec)."""
