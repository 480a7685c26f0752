"""Helpers shared by the compute-layer tests (a demo asset and its runner)."""

import subprocess

import dagster as dg


def slurm_cmd(*args: str) -> str:
    """Run a SLURM client command against the local cluster; return stdout."""
    return subprocess.run(list(args), capture_output=True, text=True, check=True, timeout=30).stdout


class DemoConfig(dg.Config):
    workload: str = "cpb_resources.workloads.demo:write_table"
    out: str = ""
    n_rows: int = 200
    seed: int = 7
    sleep_s: float = 0.0
    message: str = "demo workload failed on purpose"


def make_demo_asset():
    from cpb_resources.compute import ComputeResource, ResourceRequest

    @dg.asset(name="demo_table")
    def demo_table(context: dg.AssetExecutionContext, config: DemoConfig, compute: ComputeResource):
        result = compute.run(
            context,
            workload=config.workload,
            params={"out": config.out, "n_rows": config.n_rows, "seed": config.seed,
                    "sleep_s": config.sleep_s, "message": config.message},
            request=ResourceRequest(cpus=1, mem_mb=512, time_min=5),
        )
        meta = dict(result.get("metadata", {}))
        meta["compute_mode"] = result["compute"]["mode"]
        return dg.MaterializeResult(metadata=meta)

    return demo_table


def materialize_demo(compute, **config) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [make_demo_asset()],
        resources={"compute": compute},
        run_config=dg.RunConfig(ops={"demo_table": DemoConfig(**config)}),
        raise_on_error=False,
    )


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    failures = result.get_step_failure_events()
    assert failures, "the step did not fail"
    return failures[0].step_failure_data.error.to_string()
