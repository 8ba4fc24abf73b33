"""Sensors: react to changes in Notion, and run declarative automation."""

SENSORS: list = []
