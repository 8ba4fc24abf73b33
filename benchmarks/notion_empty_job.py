"""An empty ``sync_leads`` of the same shape as the real one, for ``benchmarks/notion_sync.py``.

It mirrors the real job's step graph (every asset op with its keys, dependencies and declared
checks, and every standalone check) with steps that do nothing, so launching it with
``dagster job execute -f benchmarks/notion_empty_job.py -j sync_leads`` measures Dagster's own
cost of such a run (process start, imports, steps, event log), which the real sync adds its
work to.
"""

from __future__ import annotations

import dagster as dg

from leads_pipeline.definitions import defs as real_defs
from leads_pipeline.raw_store import RAW_TABLE

_graph = real_defs.resolve_asset_graph()
_keys = dg.AssetSelection.assets(RAW_TABLE).downstream().resolve(_graph)


def _empty_op(name: str, keys: list[dg.AssetKey], checks: list[dg.AssetCheckSpec]):
    specs = [dg.AssetSpec(key, deps=sorted(_graph.get(key).parent_keys & _keys)) for key in keys]

    @dg.multi_asset(name=name, specs=specs, check_specs=checks)
    def _op():
        for key in keys:
            yield dg.MaterializeResult(asset_key=key)
        for check in checks:
            yield dg.AssetCheckResult(asset_key=check.asset_key, check_name=check.name, passed=True)

    return _op


def _empty_check(key: dg.AssetCheckKey):
    @dg.asset_check(asset=key.asset_key, name=key.name)
    def _check() -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=True)

    return _check


_by_op: dict = {}
for _key in sorted(_keys):
    _by_op.setdefault(_graph.get(_key).assets_def, []).append(_key)
_assets = [
    _empty_op(
        definition.node_def.name,
        keys,
        [dg.AssetCheckSpec(c.name, asset=c.asset_key) for c in definition.check_specs],
    )
    for definition, keys in _by_op.items()
]
_declared = {c.key for definition in _by_op for c in definition.check_specs}
_checks = [
    _empty_check(key)
    for key in _graph.asset_check_keys
    if key.asset_key in _keys and key not in _declared
]

defs = dg.Definitions(
    assets=_assets,
    asset_checks=_checks,
    jobs=[dg.define_asset_job("sync_leads", selection=dg.AssetSelection.all())],
)
