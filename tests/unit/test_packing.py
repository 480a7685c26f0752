"""The SLURM packing policy of `ComputeResource.run_many` (`plan_packs`, `pack_request`) and its
configuration; pure functions, no cluster (the packs as jobs: tests/slurm/test_run_many.py)."""
import pytest
from hypothesis import given, settings, strategies as st

from cpb_resources.compute import (ComputeResource, ResourceRequest, WorkUnit, auto_pack_slots, pack_request,
                                  plan_packs)

R = ResourceRequest


def _check_partition(packs: list[list[int]], n: int) -> None:
    """Every unit in exactly one pack, each pack in unit order, packs ordered by their first unit."""
    assert sorted(i for p in packs for i in p) == list(range(n))
    assert all(p == sorted(p) for p in packs)
    assert [p[0] for p in packs] == sorted(p[0] for p in packs)


@pytest.mark.parametrize("n, slots, max_units, expected", [
    (6, 2, 32, [[0, 2, 4], [1, 3, 5]]),          # equal units dealt round-robin over the slots
    (6, 3, 32, [[0, 3], [1, 4], [2, 5]]),
    (6, 6, 32, [[0], [1], [2], [3], [4], [5]]),  # as many slots as units: one unit per job
    (6, 100, 32, [[i] for i in range(6)]),       # a real cluster's many slots: no packing
    (6, 1, 32, [[0, 1, 2, 3, 4, 5]]),
    (6, 1, 4, [[0, 2, 4], [1, 3, 5]]),           # at most 4 units per pack: 2 packs, balanced
    (6, 2, 1, [[i] for i in range(6)]),          # max_units 1: packing off
    (1, 2, 32, [[0]]),
    (0, 2, 32, []),
])
def test_plan_packs_counts(n, slots, max_units, expected):
    packs = plan_packs([R(time_min=11)] * n, slots, max_units, 240)
    assert packs == expected
    _check_partition(packs, n)


@pytest.mark.parametrize("times, max_time, expected", [
    ([11] * 6, 33, [[0, 2, 4], [1, 3, 5]]),             # 66 min summed, 33 per pack: 2 packs of 3 fit
    ([11] * 6, 30, [[0, 3], [1, 4], [2, 5]]),            # 2 units (22 min) fit, 3 (33) do not
    ([11] * 6, 10, [[i] for i in range(6)]),             # no two units fit under the cap
    ([300, 5, 5, 5], 240, [[0], [1, 2, 3]]),             # a unit longer than the cap alone in its pack
    ([100, 50, 50, 30, 200, 10], 240, [[0, 1, 2, 5], [3, 4]]),  # longest first onto the least loaded pack
])
def test_plan_packs_time_caps(times, max_time, expected):
    reqs = [R(time_min=t) for t in times]
    packs = plan_packs(reqs, 1, 32, max_time)
    assert packs == expected
    _check_partition(packs, len(times))
    for p in packs:
        assert len(p) == 1 or sum(times[i] for i in p) <= max_time


def test_plan_packs_never_mixes_kinds_and_takes_slots_per_kind():
    reqs = [R(kind="gpu", gpus=1), R(), R(kind="highmem", mem_mb=64000), R(), R(kind="gpu", gpus=1), R(),
            R(kind="highmem", mem_mb=64000)]
    packs = plan_packs(reqs, 1, 32, 240)
    assert packs == [[0, 4], [1, 3, 5], [2, 6]]
    assert all(len({reqs[i].kind for i in p}) == 1 for p in packs)
    # slots per kind; a kind without an entry gets one pack per unit
    assert plan_packs(reqs, {"cpu": 3, "gpu": 1}, 32, 240) == [[0, 4], [1], [2], [3], [5], [6]]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 500), st.sampled_from(["cpu", "gpu", "highmem"])), max_size=40),
       st.integers(1, 12), st.integers(1, 10), st.integers(1, 600))
def test_plan_packs_bounds(units, slots, max_units, max_time):
    reqs = [R(time_min=t, kind=k) for t, k in units]
    packs = plan_packs(reqs, slots, max_units, max_time)
    _check_partition(packs, len(reqs))
    for p in packs:
        assert len({reqs[i].kind for i in p}) == 1
        assert len(p) <= max(1, max_units)
        assert len(p) == 1 or sum(reqs[i].time_min for i in p) <= max_time
    for kind in {k for _, k in units}:
        n = sum(k == kind for _, k in units)
        # never fewer packs than slots allow (up to one per unit)
        assert sum(reqs[p[0]].kind == kind for p in packs) >= min(slots, n)
    assert plan_packs(reqs, slots, max_units, max_time) == packs  # deterministic


def test_pack_request_max_memory_summed_time_capped():
    req = pack_request([R(cpus=1, mem_mb=500, time_min=20), R(cpus=2, mem_mb=3000, time_min=30),
                        R(cpus=1, mem_mb=800, time_min=15)], 240)
    assert req == R(cpus=2, mem_mb=3000, time_min=65)
    assert pack_request([R(time_min=200), R(time_min=100)], 240).time_min == 240  # capped
    assert pack_request([R(time_min=300)], 240).time_min == 300  # one long unit keeps its own limit
    assert pack_request([R(kind="gpu", gpus=1), R(kind="gpu", gpus=2)], 240).gpus == 2
    with pytest.raises(ValueError, match="one kind"):
        pack_request([R(), R(kind="gpu")], 240)


def test_packing_config_from_env_and_profile(tmp_path):
    res = ComputeResource.from_env({})
    assert (res.slurm_pack_slots, res.slurm_pack_max_units, res.slurm_pack_max_time_min) == (0, 32, 240)
    res = ComputeResource.from_env({"CPB_SLURM_PACK_SLOTS": "3", "CPB_SLURM_PACK_MAX_UNITS": "1",
                                    "CPB_SLURM_PACK_MAX_TIME_MIN": "90"})
    assert (res.slurm_pack_slots, res.slurm_pack_max_units, res.slurm_pack_max_time_min) == (3, 1, 90)
    prof = tmp_path / "site.yaml"
    prof.write_text("pack_slots: 16\npack_max_units: 8\npack_max_time_min: 120\n")
    res = ComputeResource.from_env({"CPB_SITE_PROFILE": str(prof), "CPB_SLURM_PACK_MAX_UNITS": "4"})
    assert (res.slurm_pack_slots, res.slurm_pack_max_units, res.slurm_pack_max_time_min) == (16, 4, 120)
    key = tmp_path / "key"
    key.write_text("x")
    with pytest.raises(ValueError, match="slurm_pack"):
        ComputeResource.from_env({"CPB_COMPUTE": "slurm", "CPB_SLURM_KEY": str(key), "CPB_SLURM_ENV_PATH": "/x",
                                  "CPB_SLURM_PACK_MAX_UNITS": "0"})


def test_explicit_slots_need_no_cluster():
    """Explicit slots, packing off and single-unit kinds are decided without asking sinfo."""
    units = [WorkUnit(f"u{i}", "m:f", {}, R()) for i in range(5)] + [WorkUnit("g", "m:f", {}, R(kind="gpu"))]
    assert ComputeResource(mode="slurm", slurm_pack_slots=2)._pack_slots(None, units) == {"cpu": 2, "gpu": 1}
    assert ComputeResource(mode="slurm", slurm_pack_max_units=1)._pack_slots(None, units) == {"cpu": 5, "gpu": 1}
    assert ComputeResource(mode="slurm", slurm_pack_slots=50, slurm_max_concurrent=3)._pack_slots(
        None, units) == {"cpu": 3, "gpu": 1}


@pytest.mark.parametrize("partition_cpus, own_cpus, unit_cpus, expected", [
    (2, 0, 1, 2),        # the local cluster, idle: 2 packs
    (2, 2, 1, 1),        # while another step's jobs hold it: 1 pack
    (2, 7, 1, 1),
    (2, 0, 4, 1),        # units wider than the partition: still one slot
    (1000, 0, 1, 1000),  # a real cluster: more slots than a step has units, no packing
    (1000, 300, 1, 700),
    (1000, 990, 1, 500),  # never below half the partition, whatever the workflow already queued
    (1000, 0, 8, 125),
])
def test_auto_pack_slots(partition_cpus, own_cpus, unit_cpus, expected):
    assert auto_pack_slots(partition_cpus, own_cpus, unit_cpus) == expected
