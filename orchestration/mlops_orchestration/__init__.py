"""Dagster definitions that schedule the project's own commands; nothing of the project is imported here."""
