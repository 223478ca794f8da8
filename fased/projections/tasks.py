"""Projection of tasks events (filled in by the issue that introduces them)."""

VERSION = 1

TABLES: dict = {}

HANDLERS: dict = {}
