"""A Dagster step that runs N sleeping units through `run_many` (for the cancellation test).

Usage: run_many_step.py OUT_DIR N SLEEP_S   (compute from CPB_COMPUTE / CPB_SLURM_*)
"""
import sys

import dagster as dg

from cpb_resources.compute import ComputeResource, ResourceRequest, WorkUnit


def main(out: str, n: int, sleep_s: float) -> int:
    units = [WorkUnit(f"u{i}", "cpb_resources.workloads.demo:write_table",
                      {"out": f"{out}/t{i}.parquet", "n_rows": 5, "seed": i, "sleep_s": sleep_s},
                      ResourceRequest(cpus=1, mem_mb=300, time_min=5)) for i in range(n)]

    @dg.asset(name="many")
    def many(context: dg.AssetExecutionContext, compute: ComputeResource):
        compute.run_many(context, units)

    result = dg.materialize([many], resources={"compute": ComputeResource.from_env()}, raise_on_error=False)
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3])))
