"""Templates for workspace bootstrap files (shipped as data)."""
