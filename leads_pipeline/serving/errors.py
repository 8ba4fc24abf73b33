"""What the serving layer raises when it cannot answer."""

from __future__ import annotations

from leads_pipeline.storage.warehouse import WarehouseNotBuiltError


class PipelineNotRunError(WarehouseNotBuiltError):
    """The results asked for have not been materialized yet; the message names the command."""


class InvalidLeadIdError(ValueError):
    """A text that is neither a Notion page id (with or without dashes) nor a page URL."""


class LeadNotFoundError(LookupError):
    """No version of this lead is in ``lead_history``; the message names the id."""


class HistoryRangeError(ValueError):
    """A moment ``lead_history`` cannot answer for: before it begins (the message says when)."""
