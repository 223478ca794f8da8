"""JSON Schema for every event type (`<type>.v<N>.json`) and for fased.json (shipped as data)."""
