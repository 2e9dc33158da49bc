"""Jobs routes of API.md."""
