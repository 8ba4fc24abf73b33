"""Schedules that keep the assets fresh."""

SCHEDULES: list = []
