"""Revision scripts of the results store (loaded by Alembic by file, in revision order)."""
