"""Downstream analytics assets that consume the event counts."""

ASSETS: list = []
