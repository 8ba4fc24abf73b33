"""Fixtures around the fake Notion server (filled in by the Notion source work)."""
