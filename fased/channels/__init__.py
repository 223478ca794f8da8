"""The channel layer: chat accounts fased talks through (Telegram today), what comes in, what
goes out, exactly once (see fased.channels.poll and fased.channels.outbox)."""
