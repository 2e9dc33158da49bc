"""Notify routes of API.md."""
