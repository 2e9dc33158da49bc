"""The benefits service."""
