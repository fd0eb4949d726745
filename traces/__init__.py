"""Traces: the canonical job record and its readers, and small bundled samples."""
