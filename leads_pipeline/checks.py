"""Asset checks: the data guarantees the pipeline proves on every run."""

CHECKS: list = []
