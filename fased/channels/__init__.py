"""Channels: chat apps (Telegram first) that reach agents, and who may talk through them."""
