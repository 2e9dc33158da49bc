"""Benefits routes of API.md."""
