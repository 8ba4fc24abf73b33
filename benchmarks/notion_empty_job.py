"""An empty ``sync_leads`` of the same shape as the real one, for ``benchmarks/notion_sync.py``.

The benchmark writes the real job's step graph (every asset op with its keys, dependencies and
declared checks, every standalone check, and its executor) to the JSON file named by ``NOTION_BENCH_SHAPE``
(see :func:`job_shape`); this module rebuilds that graph with steps that do nothing and without
importing the pipeline, so ``dagster job execute -f benchmarks/notion_empty_job.py -j sync_leads``
measures what Dagster alone costs for such a run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import dagster as dg


def job_shape(defs: dg.Definitions, job_name: str = "sync_leads") -> dict:
    """The step graph of ``job_name`` in ``defs`` as plain data."""
    graph = defs.resolve_asset_graph()
    job = defs.resolve_job_def(job_name)
    keys = set(job.asset_layer.selected_asset_keys)
    ops: dict[str, dict] = {}
    for key in sorted(keys):
        definition = graph.get(key).assets_def
        op = ops.setdefault(
            definition.node_def.name,
            {
                "keys": [],
                "deps": {},
                "checks": [[c.asset_key.to_user_string(), c.name] for c in definition.check_specs],
            },
        )
        op["keys"].append(key.to_user_string())
        op["deps"][key.to_user_string()] = sorted(
            k.to_user_string() for k in graph.get(key).parent_keys & keys
        )
    declared = {tuple(check) for op in ops.values() for check in op["checks"]}
    standalone = sorted(
        [k.asset_key.to_user_string(), k.name]
        for k in job.asset_layer.asset_graph.asset_check_keys
        if (k.asset_key.to_user_string(), k.name) not in declared and k.asset_key in keys
    )
    return {"ops": ops, "checks": standalone, "executor": job.executor_def.name}


_EXECUTORS = {"in_process": dg.in_process_executor, "multiprocess": dg.multiprocess_executor}


def _empty_op(name: str, spec: dict):
    keys = [dg.AssetKey.from_user_string(k) for k in spec["keys"]]
    checks = [
        dg.AssetCheckSpec(n, asset=dg.AssetKey.from_user_string(a)) for a, n in spec["checks"]
    ]
    specs = [
        dg.AssetSpec(key, deps=[dg.AssetKey.from_user_string(d) for d in spec["deps"][text]])
        for key, text in zip(keys, spec["keys"], strict=True)
    ]

    @dg.multi_asset(name=name, specs=specs, check_specs=checks)
    def _op():
        for key in keys:
            yield dg.MaterializeResult(asset_key=key)
        for check in checks:
            yield dg.AssetCheckResult(asset_key=check.asset_key, check_name=check.name, passed=True)

    return _op


def _empty_check(asset: str, name: str):
    @dg.asset_check(asset=dg.AssetKey.from_user_string(asset), name=name)
    def _check() -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=True)

    return _check


def _definitions() -> dg.Definitions:
    shape = json.loads(Path(os.environ["NOTION_BENCH_SHAPE"]).read_text())
    return dg.Definitions(
        assets=[_empty_op(name, spec) for name, spec in shape["ops"].items()],
        asset_checks=[_empty_check(asset, name) for asset, name in shape["checks"]],
        jobs=[
            dg.define_asset_job(
                "sync_leads",
                selection=dg.AssetSelection.all(),
                executor_def=_EXECUTORS[shape.get("executor", "multiprocess")],
            )
        ],
    )


if "NOTION_BENCH_SHAPE" in os.environ:
    defs = _definitions()
