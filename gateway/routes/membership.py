"""Membership routes of API.md."""
