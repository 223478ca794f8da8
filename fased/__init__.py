"""fased: a personal AI agent runtime for the shell, kept as an append-only event log."""

__version__ = "0.4.0"
