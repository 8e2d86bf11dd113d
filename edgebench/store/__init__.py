"""Persistence: the results database and run bundles (folders another store can ingest)."""
