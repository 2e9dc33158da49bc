"""Identity routes of API.md."""
