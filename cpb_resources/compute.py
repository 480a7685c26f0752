"""Compute resource: run heavy units of work locally (default) or on SLURM.

Assets never talk to SLURM themselves. They call::

    result = compute.run(
        context,
        workload="cpb_assets.effects.de_unit:run_stratum",   # "module:function"
        params={"adata": "/abs/in.h5ad", "out": "/abs/out.parquet", ...},
        request=ResourceRequest(cpus=2, mem_mb=8192, time_min=60),
    )

and get back the JSON-able dict the workload returned (plus a ``"compute"``
entry: mode, host, wall time, SLURM job id). The workload contract is
documented in :mod:`cpb_resources.workloads`; the same function runs in both
modes, only this resource's configuration changes.

Modes
-----
``local`` (default): the workload runs in a **subprocess** of the step
(``python -m cpb_resources.workloads.runner``) through Dagster's
``PipesSubprocessClient``. A subprocess rather than a plain call, because it
(1) exercises exactly the path a SLURM job takes (pipes extras in, logs and a
result message out, a SIGTERM turning into clean removal of temporary files),
so ``local`` really tests what ``slurm`` will run; (2) gives memory back to the
OS after each unit (DE and pseudobulk units peak at several GB); (3) keeps
rpy2's process-wide R lock and any crash of R or BLAS out of the Dagster
process. The price is ~1 s of interpreter start per unit.

``slurm``: the same runner is submitted with ``sbatch`` through
``dagster-slurm`` (over SSH, even to localhost), into a pre-deployed Python
environment (``pre_deployed_env_path``: a folder holding ``activate.sh`` and
``env/bin/python``). Logs stream back through dagster-pipes; the SLURM job id
and ``sacct`` metrics (CPU efficiency, max memory, elapsed, state) are added
to the step's output metadata by dagster-slurm. :meth:`ComputeResource.run_many`
packs the small units of a step into fewer jobs (:func:`plan_packs`; one
Python process per job runs its pack's units one after another).

Configuration from the environment (:meth:`ComputeResource.from_env`)
--------------------------------------------------------------------
=============================  ==========================================  =================
variable                       meaning                                     default
=============================  ==========================================  =================
``CPB_COMPUTE``                ``local`` or ``slurm``                      ``local``
``CPB_SLURM_HOST``             SSH host of the cluster's login node        ``127.0.0.1``
``CPB_SLURM_PORT``             SSH port                                    ``22``
``CPB_SLURM_USER``             SSH user                                    current user
``CPB_SLURM_KEY``              private key file                            (required)
``CPB_SLURM_KNOWN_HOSTS``      known_hosts file (strict host key check)    ``~/.ssh/known_hosts``
``CPB_SLURM_PARTITION``        partition (empty: the cluster's default)    empty
``CPB_SLURM_CPUS``             default CPUs per unit                       ``1``
``CPB_SLURM_MEM_MB``           default memory per unit (MB)                ``2048``
``CPB_SLURM_TIME_MIN``         default time limit per unit (minutes)       ``60``
``CPB_SLURM_REMOTE_BASE``      remote folder for job scripts/logs          ``$HOME/pipelines``
``CPB_SLURM_ENV_PATH``         pre-deployed env (activate.sh, env/bin/py)  (required)
``CPB_SLURM_POLL_S``           first status-poll interval (s)              ``1.0``
``CPB_SLURM_ACCOUNT``          ``--account`` (sites that require one)      none
``CPB_SLURM_QOS``              ``--qos``                                   none
``CPB_SLURM_GPUS``             ``--gres=gpu:N`` for ``gpu``-kind units      ``0``
``CPB_SLURM_MAX_CONCURRENT``   jobs of one step in flight at once          ``200``
``CPB_SLURM_PACK_SLOTS``       packs per step and kind; 0 = auto_pack_slots ``0``
``CPB_SLURM_PACK_MAX_UNITS``   units per pack at most; 1 = no packing      ``32``
``CPB_SLURM_PACK_MAX_TIME_MIN`` summed time requests of a pack at most     ``240``
``CPB_COMPUTE_RETRIES``        extra attempts of a failed or killed unit   ``1``
``CPB_LOCAL_WORKERS``          local subprocesses of one step at once      ``1``
``CPB_SITE_PROFILE``           YAML site profile (defaults for the above)  none
=============================  ==========================================  =================

``scripts/slurm-up`` prints exactly these settings for the local cluster.
"""
from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import getpass
import json
import math
import os
import shlex
import shutil
import signal
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping, Optional, Sequence

import dagster as dg

from cpb_resources.workloads import runner as _runner

RUNNER_FILE = Path(_runner.__file__).resolve()
RUNNER_MODULE = "cpb_resources.workloads.runner"
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")
STEP_TAG_ENV = "CPB_STEP_TAG"  # marks a step's local subprocesses, so an interrupted step finds them


def _tail(text: str, n: int) -> str:
    return "\n".join(text.rstrip().splitlines()[-n:])


def _rss_mb(raw: str) -> int:
    """sacct's MaxRSS ("123456K", "1.5G", "") in MB."""
    raw = raw.strip()
    if not raw:
        return 0
    scale = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024**2}.get(raw[-1].upper())
    return int(round(float(raw[:-1]) * scale)) if scale else int(round(float(raw) / 2**20))


PROFILE_KEYS = {"mode", "host", "port", "user", "key_path", "key_env", "known_hosts", "partition", "partitions",
                "cpus", "mem_mb", "time_min", "gpus_per_job", "remote_base", "env_path", "account", "qos", "poll_s",
                "poll_max_s", "max_concurrent_jobs", "max_retries", "local_workers", "pack_slots", "pack_max_units",
                "pack_max_time_min"}


def load_site_profile(path: str | Path, environ: Mapping[str, str]) -> dict[str, Any]:
    """Read a site profile: the settings of one real cluster, in one YAML file.

    Secrets never live in the file: ``key_env`` names the environment variable
    that holds the SSH key's path (a ``key_path`` in the file is refused).
    Unknown keys and partition kinds other than cpu/highmem/gpu are errors
    naming the file and the key.
    """
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"site profile {path}: cannot read it: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"site profile {path}: expected a mapping at the top level")
    unknown = sorted(set(data) - PROFILE_KEYS)
    if unknown:
        raise ValueError(f"site profile {path}: unknown keys {unknown} (known: {sorted(PROFILE_KEYS)})")
    if "key_path" in data:
        raise ValueError(f"site profile {path}: key 'key_path': keys are secrets; name an environment "
                         "variable holding the key's path with 'key_env' instead")
    kinds = set(data.get("partitions") or {}) - set(WORKLOAD_KINDS)
    if kinds:
        raise ValueError(f"site profile {path}: key 'partitions': unknown workload kinds {sorted(kinds)}")
    if "key_env" in data:
        value = _env_str(environ, str(data["key_env"]))
        if not value:
            raise ValueError(f"site profile {path}: key 'key_env': environment variable {data['key_env']} is not set")
        data["key_path"] = value
    return data


class _MainThreadSignals:
    """The `signal` module as dagster-slurm's pipes client sees it under :meth:`ComputeResource.run_many`.

    dagster-slurm installs SIGINT/SIGTERM handlers around each job, which Python
    allows in the main thread only; run_many polls its jobs from worker threads.
    There the handlers are skipped: the interruption reaches the step's main
    thread, and run_many cancels every job of the step itself.
    """

    def __getattr__(self, name: str):
        return getattr(signal, name)

    @staticmethod
    def signal(signum, handler):
        if threading.current_thread() is threading.main_thread():
            return signal.signal(signum, handler)
        return signal.getsignal(signum)


_ORPHAN_FALLBACK = " || sleep infinity"


def _adapt_dagster_slurm() -> None:
    """Two fixes to dagster-slurm's pipes client, applied once: signal handlers only from the main
    thread (:class:`_MainThreadSignals`) and log streams that leave nothing behind
    (:func:`_tail_without_orphans`)."""
    from dagster_slurm.pipes_clients import slurm_pipes_client

    if not isinstance(slurm_pipes_client.signal, _MainThreadSignals):
        slurm_pipes_client.signal = _MainThreadSignals()
    client = slurm_pipes_client.SlurmPipesClient
    if not getattr(client._build_tail_command, "_cpb_no_orphans", False):
        client._build_tail_command = _tail_without_orphans(client._build_tail_command)


def _tail_without_orphans(build):
    """dagster-slurm 1.22 streams a job's logs with ``tail -F … || tail -f … || sleep infinity`` over
    the shared SSH connection. When the stream is stopped at the job's end, both tails exit on the
    broken pipe and the ``sleep infinity`` fallback runs on forever on the login node, holding its
    SSH session open: two per job. After MaxSessions of them (sshd's default is 10) the connection
    refuses new sessions, and every later SSH command of every job pays a full handshake (measured:
    about 1 s each, a dozen per job). Without the fallback nothing is left behind."""
    def build_tail_command(self, remote_path):
        cmd = build(self, remote_path)
        if cmd and cmd[-1].endswith(_ORPHAN_FALLBACK):
            cmd = [*cmd[:-1], cmd[-1][: -len(_ORPHAN_FALLBACK)]]
        return cmd

    build_tail_command._cpb_no_orphans = True
    return build_tail_command


def _terminate_local_units(step_tag: str) -> None:
    """SIGTERM every runner subprocess of this step, found by the step's marker in its environment."""
    marker = f"{STEP_TAG_ENV}={step_tag}".encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if marker in (proc / "environ").read_bytes().split(b"\0"):
                os.kill(int(proc.name), signal.SIGTERM)
        except (OSError, ValueError):
            continue


class WorkloadFailed(Exception):
    """A workload raised or its job failed; the message carries the remote traceback."""


WORKLOAD_KINDS = ("cpu", "highmem", "gpu")


@dataclass(frozen=True)
class ResourceRequest:
    """What one unit of work needs. Used as SLURM's ``--cpus-per-task``,
    ``--mem``, ``--time`` and ``--gres=gpu:N``; in local mode ``cpus`` caps
    BLAS/OpenMP threads. ``kind`` picks the partition of a site profile
    (``cpu``, ``highmem`` or ``gpu``)."""

    cpus: int = 1
    mem_mb: int = 2048
    time_min: int = 60
    gpus: int = 0
    kind: str = "cpu"

    def __post_init__(self) -> None:
        if self.cpus < 1 or self.mem_mb < 1 or self.time_min < 1 or self.gpus < 0:
            raise ValueError(f"ResourceRequest values must be >= 1 (gpus >= 0), got {self}")
        if self.kind not in WORKLOAD_KINDS:
            raise ValueError(f"ResourceRequest kind must be one of {WORKLOAD_KINDS}, got {self.kind!r}")

    @classmethod
    def for_matrix(cls, n_samples: int, n_genes: int, *, bytes_per_value: int = 8, copies: float = 6.0,
                   base_mb: int = 700, seconds_per_sample: float = 0.05, cpus: int = 1,
                   kind: str = "cpu") -> "ResourceRequest":
        """A request sized from a unit's shape.

        Parameters
        ----------
        n_samples, n_genes
            The dense matrix the unit holds.
        bytes_per_value
            8 for float64.
        copies
            How many copies of the matrix the unit holds at its peak (measured:
            the Python matrix, R's copy, voom weights, residuals, …).
        base_mb
            Interpreter, R and libraries (MB).
        seconds_per_sample
            Measured fit cost per sample; the time limit is 3× that plus 10 min.
        """
        matrix_mb = n_samples * n_genes * bytes_per_value / 2**20
        mem_mb = int(base_mb + copies * matrix_mb) + 1
        time_min = int(10 + 3 * seconds_per_sample * n_samples / 60) + 1
        return cls(cpus=cpus, mem_mb=mem_mb, time_min=time_min, kind=kind)

    @property
    def time_limit(self) -> str:
        """SLURM ``HH:MM:SS``."""
        return f"{self.time_min // 60:02d}:{self.time_min % 60:02d}:00"

    def slurm_opts(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"cpus_per_task": self.cpus, "mem": f"{self.mem_mb}M", "time_limit": self.time_limit}
        if self.gpus:
            opts["gpus_per_node"] = self.gpus  # dagster-slurm writes --gres=gpu:N
        return opts

    def as_metadata(self) -> dict[str, Any]:
        return {"cpus": self.cpus, "mem_mb": self.mem_mb, "time_min": self.time_min, "gpus": self.gpus,
                "kind": self.kind}


@dataclass(frozen=True)
class WorkUnit:
    """One unit of a step for :meth:`ComputeResource.run_many`.

    ``key`` names the unit in logs, errors and metadata (unique within a step).
    """

    key: str
    workload: str
    params: Mapping[str, Any]
    request: Optional[ResourceRequest] = None


def plan_packs(requests: Sequence[ResourceRequest], slots: int | Mapping[str, int], max_units: int,
               max_time_min: int) -> list[list[int]]:
    """Group units (given by their requests) into packs: one SLURM job per pack.

    Returns lists of unit indices: each pack's units in unit order, packs ordered
    by their first unit. Deterministic. Units of different ``kind`` never share a
    pack. Per kind, the number of packs is ``min(slots, units)`` raised as far as
    needed so that no pack holds more than ``max_units`` units or more than
    ``max_time_min`` summed minutes of time requests (a unit whose own request is
    longer gets a pack of its own). Units are dealt longest first to the pack with
    the least summed time (LPT), so the packs of a step end at about the same time.
    ``max_units <= 1`` turns packing off (one pack per unit). ``slots`` is one
    number for every kind or a mapping kind -> slots (missing kinds: one per unit).
    """
    by_kind: dict[str, list[int]] = {}
    for i, r in enumerate(requests):
        by_kind.setdefault(r.kind, []).append(i)
    packs: list[list[int]] = []
    for kind, idxs in by_kind.items():
        n = len(idxs)
        n_slots = slots.get(kind, n) if isinstance(slots, Mapping) else slots
        if max_units <= 1 or n_slots >= n:
            packs.extend([i] for i in idxs)
            continue
        total = sum(requests[i].time_min for i in idxs)
        n_packs = min(n, max(1, n_slots, math.ceil(n / max_units), math.ceil(total / max(1, max_time_min))))
        members: list[list[int]] = [[] for _ in range(n_packs)]
        minutes = [0] * n_packs
        for i in sorted(idxs, key=lambda i: (-requests[i].time_min, -requests[i].mem_mb, i)):
            t = requests[i].time_min
            fits = [p for p in range(len(members)) if len(members[p]) < max_units
                    and (not members[p] or minutes[p] + t <= max_time_min)]
            if fits:
                p = min(fits, key=lambda p: (minutes[p], len(members[p]), p))
            else:
                members.append([])
                minutes.append(0)
                p = len(members) - 1
            members[p].append(i)
            minutes[p] += t
        packs.extend(sorted(m) for m in members if m)
    return sorted(packs, key=lambda m: m[0])


def pack_request(requests: Sequence[ResourceRequest], max_time_min: int) -> ResourceRequest:
    """What a pack asks SLURM for: the largest memory, CPUs and GPUs of its units, and their summed
    time requests capped at ``max_time_min`` (never below the longest single request)."""
    kinds = {r.kind for r in requests}
    if len(kinds) != 1:
        raise ValueError(f"a pack holds units of one kind, got {sorted(kinds)}")
    longest = max(r.time_min for r in requests)
    return ResourceRequest(cpus=max(r.cpus for r in requests), mem_mb=max(r.mem_mb for r in requests),
                           time_min=max(longest, min(sum(r.time_min for r in requests), max_time_min)),
                           gpus=max(r.gpus for r in requests), kind=kinds.pop())


def auto_pack_slots(partition_cpus: int, own_cpus: int, unit_cpus: int = 1) -> int:
    """Job slots of a step when ``slurm_pack_slots`` is 0 (auto): the partition's CPUs less those the
    user's own pending and running jobs already ask for there (the other steps of this workflow),
    but never fewer than half of the partition's, in jobs of ``unit_cpus`` CPUs; at least 1.

    On a real cluster (hundreds of cores) that is more slots than a step has units: one unit per job,
    as without packing. On the 2-CPU local cluster: 2 packs, or 1 while another step's jobs hold it.
    """
    usable = max(partition_cpus // 2, partition_cpus - max(0, own_cpus))
    return max(1, usable // max(1, unit_cpus))


def _env_number(environ: Mapping[str, str], name: str, default, parse, what: str):
    """`name` parsed by `parse` (int or float); `default` when unset or blank; a bad value names the variable."""
    raw = (environ.get(name) or "").strip()
    if not raw:
        return default
    try:
        return parse(raw)
    except ValueError:
        raise ValueError(f"{name} must be {what}, got {raw!r}") from None


def _env_int(environ: Mapping[str, str], name: str, default: int) -> int:
    return _env_number(environ, name, default, int, "an integer")


def _env_float(environ: Mapping[str, str], name: str, default: float) -> float:
    return _env_number(environ, name, default, float, "a number")


def _env_str(environ: Mapping[str, str], name: str) -> Optional[str]:
    raw = (environ.get(name) or "").strip()
    return raw or None


class ComputeResource(dg.ConfigurableResource):
    """Runs workloads locally (subprocess) or as SLURM jobs through dagster-slurm."""

    mode: Literal["local", "slurm"] = "local"
    # SLURM settings (ignored in local mode)
    slurm_host: str = "127.0.0.1"
    slurm_port: int = 22
    slurm_user: Optional[str] = None
    slurm_key_path: Optional[str] = None
    slurm_known_hosts: Optional[str] = None
    slurm_partition: str = ""
    slurm_cpus: int = 1
    slurm_mem_mb: int = 2048
    slurm_time_min: int = 60
    slurm_remote_base: Optional[str] = None
    slurm_env_path: Optional[str] = None
    slurm_account: Optional[str] = None
    slurm_qos: Optional[str] = None
    slurm_poll_s: float = 1.0
    slurm_poll_max_s: float = 5.0
    slurm_poll_timeout_s: int = 7 * 24 * 3600
    slurm_partitions: dict[str, str] = {}  # site profile: workload kind (cpu/highmem/gpu) -> partition
    slurm_gpus: int = 0  # GPUs (--gres=gpu:N) for requests of kind "gpu" that name none themselves
    slurm_max_concurrent: int = 200  # jobs of one step in flight at once
    # packing (SLURM): several units of a step in one job, see run_many and plan_packs
    slurm_pack_slots: int = 0  # packs per step and kind; 0 = auto (auto_pack_slots: sinfo, squeue)
    slurm_pack_max_units: int = 32  # units in one pack at most; 1 = one job per unit (packing off)
    slurm_pack_max_time_min: int = 240  # summed time requests of one pack at most (minutes)
    # Both modes
    cpb_home: Optional[str] = None
    local_python: Optional[str] = None
    local_workers: int = 1  # units of one step run at once as local subprocesses
    max_retries: int = 1  # a unit that fails or is killed is tried again this many times

    # ---------------------------------------------------------------- config
    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None) -> "ComputeResource":
        """Build from ``CPB_COMPUTE`` / ``CPB_SLURM_*`` (see the module docstring).

        ``CPB_SITE_PROFILE`` names a site profile (YAML, see :func:`load_site_profile`);
        its values are the defaults, and any ``CPB_*`` variable set overrides them.
        """
        e = os.environ if environ is None else environ
        profile = load_site_profile(e["CPB_SITE_PROFILE"], e) if _env_str(e, "CPB_SITE_PROFILE") else {}
        mode = (e.get("CPB_COMPUTE") or profile.get("mode") or "local").strip().lower()
        if mode not in ("local", "slurm"):
            raise ValueError(f"CPB_COMPUTE must be 'local' or 'slurm', got {mode!r}")

        def pick(var: str, key: str, default=None):
            return _env_str(e, var) or profile.get(key) or default

        res = cls(
            mode=mode,  # type: ignore[arg-type]
            slurm_host=pick("CPB_SLURM_HOST", "host", "127.0.0.1"),
            slurm_port=_env_int(e, "CPB_SLURM_PORT", int(profile.get("port", 22))),
            slurm_user=pick("CPB_SLURM_USER", "user"),
            slurm_key_path=pick("CPB_SLURM_KEY", "key_path"),
            slurm_known_hosts=pick("CPB_SLURM_KNOWN_HOSTS", "known_hosts"),
            slurm_partition=pick("CPB_SLURM_PARTITION", "partition", ""),
            slurm_partitions=dict(profile.get("partitions", {})),
            slurm_cpus=_env_int(e, "CPB_SLURM_CPUS", int(profile.get("cpus", 1))),
            slurm_mem_mb=_env_int(e, "CPB_SLURM_MEM_MB", int(profile.get("mem_mb", 2048))),
            slurm_time_min=_env_int(e, "CPB_SLURM_TIME_MIN", int(profile.get("time_min", 60))),
            slurm_gpus=_env_int(e, "CPB_SLURM_GPUS", int(profile.get("gpus_per_job", 0))),
            slurm_remote_base=pick("CPB_SLURM_REMOTE_BASE", "remote_base"),
            slurm_env_path=pick("CPB_SLURM_ENV_PATH", "env_path"),
            slurm_account=pick("CPB_SLURM_ACCOUNT", "account"),
            slurm_qos=pick("CPB_SLURM_QOS", "qos"),
            slurm_poll_s=_env_float(e, "CPB_SLURM_POLL_S", float(profile.get("poll_s", 1.0))),
            slurm_poll_max_s=_env_float(e, "CPB_SLURM_POLL_MAX_S", float(profile.get("poll_max_s", 5.0))),
            slurm_max_concurrent=_env_int(e, "CPB_SLURM_MAX_CONCURRENT", int(profile.get("max_concurrent_jobs", 200))),
            slurm_pack_slots=_env_int(e, "CPB_SLURM_PACK_SLOTS", int(profile.get("pack_slots", 0))),
            slurm_pack_max_units=_env_int(e, "CPB_SLURM_PACK_MAX_UNITS", int(profile.get("pack_max_units", 32))),
            slurm_pack_max_time_min=_env_int(e, "CPB_SLURM_PACK_MAX_TIME_MIN",
                                             int(profile.get("pack_max_time_min", 240))),
            max_retries=_env_int(e, "CPB_COMPUTE_RETRIES", int(profile.get("max_retries", 1))),
            local_workers=_env_int(e, "CPB_LOCAL_WORKERS", int(profile.get("local_workers", 1))),
            cpb_home=_env_str(e, "CPB_HOME"),
        )
        res.check()
        return res

    def check(self) -> None:
        """Raise ValueError when the configuration cannot work."""
        if self.mode == "local":
            return
        missing = [n for n, v in (("CPB_SLURM_KEY (slurm_key_path)", self.slurm_key_path),
                                  ("CPB_SLURM_ENV_PATH (slurm_env_path)", self.slurm_env_path)) if not v]
        if missing:
            raise ValueError("slurm mode needs " + " and ".join(missing))
        if not Path(self.slurm_key_path).expanduser().exists():  # type: ignore[arg-type]
            raise ValueError(f"SSH key not found: {self.slurm_key_path}")
        if not 1 <= self.slurm_port <= 65535:
            raise ValueError(f"bad SSH port {self.slurm_port}")
        if self.slurm_cpus < 1 or self.slurm_mem_mb < 1 or self.slurm_time_min < 1:
            raise ValueError("slurm_cpus, slurm_mem_mb and slurm_time_min must be >= 1")
        if self.slurm_pack_slots < 0 or self.slurm_pack_max_units < 1 or self.slurm_pack_max_time_min < 1:
            raise ValueError("slurm_pack_slots must be >= 0, slurm_pack_max_units and slurm_pack_max_time_min >= 1")

    @property
    def default_request(self) -> ResourceRequest:
        return ResourceRequest(cpus=self.slurm_cpus, mem_mb=self.slurm_mem_mb, time_min=self.slurm_time_min)

    def _home(self) -> Path:
        return Path(self.cpb_home or os.environ.get("CPB_HOME") or (Path.cwd() / ".cpb")).resolve()

    # ------------------------------------------------------------------- run
    def run(
        self,
        context: dg.OpExecutionContext | dg.AssetExecutionContext,
        workload: str,
        params: Mapping[str, Any],
        request: Optional[ResourceRequest] = None,
        env: Optional[Mapping[str, str]] = None,
    ) -> dict:
        """Run ``workload`` ("module:function") with ``params``; return its result dict.

        One unit through :meth:`run_many` (same retries, same errors).
        """
        return self.run_many(context, [WorkUnit("unit", workload, params, request)], env=env)[0]

    def run_many(
        self,
        context: dg.OpExecutionContext | dg.AssetExecutionContext,
        units: Sequence[WorkUnit],
        env: Optional[Mapping[str, str]] = None,
    ) -> list[dict]:
        """Run every unit of a step at once; return their result dicts in unit order.

        SLURM: the units are grouped into packs (:func:`plan_packs`: about one pack
        per job slot the step can use, see ``slurm_pack_*``), one ``sbatch`` per
        pack, all submitted together (at most ``slurm_max_concurrent`` in flight),
        each in its own remote folder under one folder of the step, logs streamed
        back through pipes. A pack's job runs its units one after another in one
        Python process and hands back one result per unit. Local: one subprocess
        per unit, at most ``local_workers`` at a time. A unit that fails or is
        killed is run again up to ``max_retries`` times (on SLURM: the units of a
        pack that sent no result, as a pack again). When the step is interrupted
        (UI terminate, SIGTERM) every job of the step is cancelled (``scancel``)
        and every local subprocess is terminated before the interruption goes on.

        Each result's ``"compute"`` entry holds the unit key, the attempts, the
        request and, on SLURM, the job id, sacct's MaxRSS and elapsed time of the
        unit's job and ``pack`` (its name, size, attempt and request).

        Raises
        ------
        WorkloadFailed
            Naming every unit that still failed after its retries, with its job
            id (SLURM) and the last lines of its log / traceback.
        """
        units = list(units)
        keys = [u.key for u in units]
        if len(set(keys)) != len(keys):
            raise ValueError(f"unit keys must be unique within a step: {keys}")
        for u in units:
            try:
                json.dumps({"workload": u.workload, "params": dict(u.params)})
            except TypeError as exc:
                raise TypeError(f"params of unit {u.key} ({u.workload}) must be JSON-able: {exc}") from None
        if not units:
            return []
        step_tag = f"{uuid.uuid4().hex[:12]}"
        if self.mode == "local":
            jobs = [[i] for i in range(len(units))]
            workers = max(1, min(self.local_workers, len(units)))
            context.log.info(f"compute[local]: {len(units)} unit(s), {workers} at a time, step folder {step_tag}")
        else:
            jobs = plan_packs([u.request or self.default_request for u in units], self._pack_slots(context, units),
                              self.slurm_pack_max_units, self.slurm_pack_max_time_min)
            workers = max(1, min(self.slurm_max_concurrent, len(jobs)))
            context.log.info(f"compute[slurm]: {len(units)} unit(s) in {len(jobs)} job(s) (packs of "
                             f"{min(map(len, jobs))}-{max(map(len, jobs))} units), {workers} at a time, "
                             f"step folder {step_tag}")
        t0 = time.monotonic()
        results: list[Optional[dict]] = [None] * len(units)
        failures: dict[int, str] = {}
        folders: dict[str, list[int]] = {}  # SLURM: remote folder of each pack attempt -> its units

        def attempt_all(i: int) -> None:
            unit = units[i]
            last = ""
            for attempt in range(self.max_retries + 1):
                try:
                    result = self._run_unit(context, unit, env, step_tag, attempt)
                except WorkloadFailed as exc:
                    last = str(exc)
                    if cancelled.is_set():
                        break
                    context.log.warning(f"unit {unit.key} failed (attempt {attempt + 1} of "
                                        f"{self.max_retries + 1}): {_tail(last, 3)}")
                    continue
                result.setdefault("compute", {}).update({"unit": unit.key, "attempts": attempt + 1})
                results[i] = result
                return
            failures[i] = last

        def attempt_pack(p: int) -> None:
            name = f"pack-{p:03d}"
            pending, last = list(jobs[p]), {}
            for attempt in range(self.max_retries + 1):
                got, failed = self._run_pack(context, units, pending, name, attempt, env, step_tag, folders)
                for i, result in got.items():
                    result.setdefault("compute", {}).update({"unit": units[i].key, "attempts": attempt + 1})
                    results[i] = result
                last.update(failed)
                pending = [i for i in pending if i not in got]
                if not pending or cancelled.is_set():
                    break
                for i in pending:
                    context.log.warning(f"unit {units[i].key} ({name}) failed (attempt {attempt + 1} of "
                                        f"{self.max_retries + 1}): {_tail(last.get(i, ''), 3)}")
            for i in pending:
                failures[i] = last.get(i, "")

        task = attempt_all if self.mode == "local" else attempt_pack
        cancelled = threading.Event()
        if workers == 1:
            try:
                for j in range(len(jobs)):
                    task(j if self.mode == "slurm" else jobs[j][0])
            except BaseException:
                cancelled.set()
                self._cancel_step(context, step_tag)
                raise
        else:
            pool = cf.ThreadPoolExecutor(workers, thread_name_prefix="cpb-unit")
            futures = [pool.submit(task, j if self.mode == "slurm" else jobs[j][0]) for j in range(len(jobs))]
            try:
                for fut in futures:
                    fut.result()
            except BaseException:
                # interrupted (DagsterExecutionInterruptedError arrives in this thread only)
                cancelled.set()
                for fut in futures:
                    fut.cancel()
                self._cancel_step(context, step_tag)
                pool.shutdown(wait=True, cancel_futures=True)
                raise
            pool.shutdown(wait=True)
        failed_jobs = self._add_sacct(context, step_tag, units, results, failures, folders) \
            if self.mode == "slurm" else {}
        if failures:
            lines = [f"{len(failures)} of {len(units)} unit(s) failed after {self.max_retries + 1} attempt(s):"]
            for i in sorted(failures):
                job = failed_jobs.get(i)
                lines.append(f"--- unit {units[i].key}" + (f", SLURM job {job}" if job else "") + ":")
                lines.append(_tail(failures[i], 30))
            raise WorkloadFailed("\n".join(lines))
        wall = round(time.monotonic() - t0, 3)
        for r in results:
            r["compute"]["step_wall_s"] = wall  # type: ignore[index]
        return results  # type: ignore[return-value]

    def _pack_slots(self, context, units: Sequence[WorkUnit]) -> dict[str, int]:
        """Packs per workload kind: ``slurm_pack_slots``, or (0 = auto) :func:`auto_pack_slots` of the
        kind's partition (``sinfo``, ``squeue``); never more than ``slurm_max_concurrent``. Where the
        cluster cannot be asked: one pack per unit."""
        by_kind: dict[str, list[ResourceRequest]] = {}
        for u in units:
            req = u.request or self.default_request
            by_kind.setdefault(req.kind, []).append(req)
        slots: dict[str, int] = {}
        for kind, reqs in by_kind.items():
            if self.slurm_pack_max_units <= 1 or len(reqs) == 1:
                slots[kind] = len(reqs)  # nothing to pack: no need to ask the cluster
            elif self.slurm_pack_slots > 0:
                slots[kind] = self.slurm_pack_slots
            else:
                cpus = self._partition_cpus(context, self.partition_for(reqs[0]))
                slots[kind] = auto_pack_slots(*cpus, max(r.cpus for r in reqs)) if cpus else len(reqs)
            slots[kind] = min(slots[kind], max(1, self.slurm_max_concurrent))
        return slots

    def _partition_cpus(self, context, partition: str) -> Optional[tuple[int, int]]:
        """(all CPUs of the partition, CPUs the user's own pending and running jobs ask for there):
        ``sinfo`` and ``squeue`` in one SSH call; the default partition when ``partition`` is empty."""
        part = f" -p {shlex.quote(partition)}" if partition else ""
        try:
            out = self._ssh(f"sinfo -h -o '%P %C'{part}; echo '--'; "
                            f"squeue -h -u \"$(id -un)\" -t PD,R,CF -o %C{part}")
            nodes, _, queue = out.partition("--")
            totals = {}
            for line in nodes.splitlines():
                name, _, cpus = line.strip().partition(" ")
                if cpus.count("/") == 3:
                    totals[name] = int(cpus.split("/")[3])
            default = [v for k, v in totals.items() if k.endswith("*")]
            total = default[0] if default and not partition else max(totals.values(), default=0)
            mine = sum(int(x) for x in queue.split() if x.isdigit())
        except Exception as exc:
            context.log.warning(f"compute[slurm]: sinfo/squeue could not tell the partition's CPUs ({exc}); "
                                "one job per unit")
            return None
        return (total, mine) if total else None

    def _run_pack(self, context, units: Sequence[WorkUnit], idxs: list[int], name: str, attempt: int,
                  env: Optional[Mapping[str, str]], step_tag: str,
                  folders: dict[str, list[int]]) -> tuple[dict[int, dict], dict[int, str]]:
        """One SLURM job running the units ``idxs`` one after another in one process.

        Returns (results by unit index, failure text by unit index); every unit of the pack is in
        exactly one of them. A unit that raised fails with its own traceback; a unit that never
        sent a result (the job was killed, failed to start, …) fails with what the job reported.
        """
        members = [units[i] for i in idxs]
        request = pack_request([u.request or self.default_request for u in members], self.slurm_pack_max_time_min)
        home = self._home()
        # results and tracebacks of the units come back through files on the shared filesystem: they
        # survive a job that fails or is killed after some of its units ended
        handoff = home / "compute" / "packs" / uuid.uuid4().hex
        handoff.mkdir(parents=True, exist_ok=True)
        err_dir = home / "compute" / "errors"
        err_dir.mkdir(parents=True, exist_ok=True)
        err_file = err_dir / f"{handoff.name}.txt"  # the pack's own failure (outside any unit)
        spec = {"pack": name, "units": [
            {"key": u.key, "workload": u.workload, "params": dict(u.params),
             "result_file": str(handoff / f"{j}.json"), "error_file": str(handoff / f"{j}.err")}
            for j, u in enumerate(members)]}
        worker_env = {
            "CPB_HOME": str(home),
            _runner.ERROR_FILE_ENV: str(err_file),
            _runner.MODE_ENV: self.mode,
            STEP_TAG_ENV: step_tag,
            **{v: str(request.cpus) for v in THREAD_ENV_VARS},
            **(dict(env) if env else {}),
        }
        remote_base = self._unit_remote_base(step_tag, name, attempt)
        folders[remote_base.rsplit("/", 1)[1]] = list(idxs)
        what = members[0].workload if len(members) == 1 else f"{len(members)} units ({', '.join(u.key for u in members)})"
        context.log.info(f"compute[slurm]: {name}: {what} with {request}" + (f" (retry {attempt})" if attempt else ""))
        t0 = time.monotonic()
        job_error = ""
        try:
            self._run_slurm(context, spec, worker_env, request, remote_base=remote_base)
        except Exception as exc:
            job_error = (err_file.read_text() if err_file.exists() else "") or \
                f"{type(exc).__name__}: {exc}"
        wall = round(time.monotonic() - t0, 3)
        got: dict[int, dict] = {}
        failed: dict[int, str] = {}
        try:
            for j, i in enumerate(idxs):
                res_file, unit_err = handoff / f"{j}.json", handoff / f"{j}.err"
                if res_file.exists():
                    data = json.loads(res_file.read_text())
                    if data.get("key") == units[i].key:
                        result = data["result"]
                        result.setdefault("compute", {}).update({
                            "unit_wall_s": wall, "request": (units[i].request or self.default_request).as_metadata(),
                            "pack": {"name": name, "size": len(idxs), "attempt": attempt,
                                     "request": request.as_metadata()}})
                        got[i] = result
                        continue
                if unit_err.exists():
                    failed[i] = unit_err.read_text()
                elif job_error:
                    failed[i] = (f"unit {units[i].key} ({units[i].workload}) sent no result: its job ({name}, "
                                 f"{len(idxs)} unit(s)) ended first:\n{job_error}")
                else:
                    failed[i] = f"workload {units[i].workload} ended without sending a result ({self.mode} mode)"
        finally:
            shutil.rmtree(handoff, ignore_errors=True)
            err_file.unlink(missing_ok=True)
        return got, failed

    def _run_unit(self, context, unit: WorkUnit, env: Optional[Mapping[str, str]], step_tag: str,
                  attempt: int) -> dict:
        """One unit as one local subprocess (on SLURM, run_many runs packs: :meth:`_run_pack`)."""
        request = unit.request or self.default_request
        spec = {"workload": unit.workload, "params": dict(unit.params)}
        home = self._home()
        err_dir = home / "compute" / "errors"
        err_dir.mkdir(parents=True, exist_ok=True)
        err_file = err_dir / f"{uuid.uuid4().hex}.txt"
        worker_env = {
            "CPB_HOME": str(home),
            _runner.ERROR_FILE_ENV: str(err_file),
            _runner.MODE_ENV: self.mode,
            STEP_TAG_ENV: step_tag,
            **{v: str(request.cpus) for v in THREAD_ENV_VARS},
            **(dict(env) if env else {}),
        }
        context.log.info(f"compute[{self.mode}]: unit {unit.key}: {unit.workload} with {request}"
                         + (f" (retry {attempt})" if attempt else ""))
        t0 = time.monotonic()
        try:
            invocation = self._run_local(context, spec, worker_env)
        except Exception as exc:
            remote = err_file.read_text() if err_file.exists() else None
            if remote:
                raise WorkloadFailed(remote) from exc
            raise WorkloadFailed(f"workload {unit.workload} failed in {self.mode} mode: "
                                 f"{type(exc).__name__}: {exc}") from exc
        finally:
            err_file.unlink(missing_ok=True)
        result = None
        for msg in invocation.get_custom_messages():
            if isinstance(msg, dict) and _runner.RESULT_KEY in msg:
                result = msg[_runner.RESULT_KEY]
        if result is None:
            raise WorkloadFailed(f"workload {unit.workload} ended without sending a result ({self.mode} mode)")
        result.setdefault("compute", {}).update({"unit_wall_s": round(time.monotonic() - t0, 3),
                                                 "request": request.as_metadata()})
        return result

    # ------------------------------------------------------------- slurm step
    def _remote_root(self) -> str:
        return (self.slurm_remote_base or "$HOME/pipelines").rstrip("/")

    @staticmethod
    def _safe(name: str) -> str:
        return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:80]

    def _unit_remote_base(self, step_tag: str, name: str, attempt: int) -> str:
        """The remote folder of one job of a step: ``<remote_base>/cpb-steps/<step>/<pack>-a<attempt>``."""
        return f"{self._remote_root()}/cpb-steps/{step_tag}/{self._safe(name)}-a{attempt}"

    def _ssh(self, command: str, timeout: int = 60) -> str:
        """Run one shell command on the cluster's login node; return stdout."""
        import subprocess

        ssh = self._ssh_resource()
        proc = subprocess.run([*ssh.get_ssh_base_command(), command], capture_output=True, text=True,
                              timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"ssh {ssh.host}: {command!r} exited {proc.returncode}: {proc.stderr.strip()[-400:]}")
        return proc.stdout

    def step_jobs(self, step_tag: str) -> list[dict[str, str]]:
        """sacct rows (JobID, WorkDir, State, MaxRSS, Elapsed) of every job a step submitted."""
        out = self._ssh("sacct -n -P -S now-7days -o JobID,WorkDir,State,MaxRSS,ElapsedRaw,JobName "
                        "--user \"$(id -un)\"")
        rows, batch = [], {}
        for line in out.splitlines():
            f = line.split("|")
            if len(f) < 6:
                continue
            job, workdir, state, maxrss, elapsed, _ = f[:6]
            if "." in job:  # job steps (.batch, .extern) carry the memory high-water mark
                base = job.split(".")[0]
                batch[base] = max(batch.get(base, 0), _rss_mb(maxrss))
                continue
            if f"/cpb-steps/{step_tag}/" in workdir + "/":
                rows.append({"job_id": job, "workdir": workdir, "state": state, "elapsed_s": elapsed})
        for r in rows:
            r["max_rss_mb"] = str(batch.get(r["job_id"], 0))
        return rows

    def _cancel_step(self, context, step_tag: str) -> None:
        """Cancel every SLURM job of the step; terminate local runner subprocesses."""
        if self.mode == "local":
            _terminate_local_units(step_tag)
            return
        try:
            out = self._ssh("squeue -h -o '%i %Z' --user \"$(id -un)\"")
            ids = [line.split()[0] for line in out.splitlines()
                   if len(line.split()) > 1 and f"/cpb-steps/{step_tag}/" in line.split()[1] + "/"]
            if ids:
                self._ssh("scancel " + " ".join(ids))
            context.log.warning(f"compute[slurm]: step interrupted; cancelled jobs {ids or 'none left'}")
        except Exception as exc:  # best effort: the interruption itself must go on
            context.log.error(f"compute[slurm]: could not cancel the step's jobs: {exc}")

    def _add_sacct(self, context, step_tag, units, results, failures,
                   folders: Optional[Mapping[str, Sequence[int]]] = None) -> dict[int, str]:
        """Add job id, state, MaxRSS and elapsed of each unit's last job (sacct: its pack's) to its result;
        return the job ids of the failed units.

        ``folders`` maps each job's remote folder name (``<pack>-a<attempt>``) to the units it ran;
        without it a folder is named after its one unit (``<unit key>-a<attempt>``)."""
        failed_jobs: dict[int, str] = {}
        try:
            rows = self.step_jobs(step_tag)
        except Exception as exc:
            context.log.warning(f"compute[slurm]: sacct unavailable for the step's metrics: {exc}")
            return failed_jobs
        if folders is None:
            folders = {f"{self._safe(u.key)}-a{a}": [i] for i, u in enumerate(units)
                       for a in range(self.max_retries + 1)}
        by_unit: dict[int, tuple[int, dict]] = {}
        for r in rows:
            folder = r["workdir"].split(f"/cpb-steps/{step_tag}/", 1)[1].split("/", 1)[0]
            try:
                attempt = int(folder.rsplit("-a", 1)[1])
            except (IndexError, ValueError):
                continue
            for i in folders.get(folder, ()):
                if i not in by_unit or attempt >= by_unit[i][0]:  # the last attempt wins
                    by_unit[i] = (attempt, r)
        for i, u in enumerate(units):
            if i not in by_unit:
                continue
            row = by_unit[i][1]
            if results[i] is not None:
                results[i]["compute"].update({"slurm_job_id": results[i]["compute"].get("slurm_job_id")
                                              or row["job_id"], "sacct_state": row["state"],
                                              "max_rss_mb": int(row["max_rss_mb"]),
                                              "elapsed_s": int(row["elapsed_s"] or 0)})
            elif i in failures:
                failed_jobs[i] = row["job_id"]
        return failed_jobs

    def _run_local(self, context, spec: dict, worker_env: dict):
        client = dg.PipesSubprocessClient(env=worker_env)
        python = self.local_python or sys.executable
        return client.run(context=context, command=[python, "-m", RUNNER_MODULE], extras=spec)

    def _ssh_resource(self):
        from dagster_slurm import SSHConnectionResource

        return SSHConnectionResource(
            host=self.slurm_host,
            port=self.slurm_port,
            user=self.slurm_user or getpass.getuser(),
            key_path=self.slurm_key_path,
            known_hosts_file=self.slurm_known_hosts,
            host_key_checking="strict",
        )

    def effective_request(self, request: ResourceRequest) -> ResourceRequest:
        """The request as submitted: a ``gpu`` request without a count gets ``slurm_gpus``."""
        if request.kind == "gpu" and request.gpus == 0 and self.slurm_gpus:
            return dataclasses.replace(request, gpus=self.slurm_gpus)
        return request

    def partition_for(self, request: ResourceRequest) -> str:
        """The site profile's partition for the request's kind, else the default partition."""
        return self.slurm_partitions.get(request.kind) or self.slurm_partition

    def _run_slurm(self, context, spec: dict, worker_env: dict, request: ResourceRequest,
                   remote_base: Optional[str] = None):
        self.check()
        from dagster_slurm import BashLauncher, SlurmQueueConfig, SlurmResource
        from dagster_slurm import ComputeResource as SlurmCompute

        _adapt_dagster_slurm()
        ssh = self._ssh_resource()
        slurm = SlurmResource(
            ssh=ssh,
            queue=SlurmQueueConfig(
                partition=self.partition_for(request),
                cpus=self.slurm_cpus,
                mem=f"{self.slurm_mem_mb}M",
                time_limit=self.default_request.time_limit,
                account=self.slurm_account,
                qos=self.slurm_qos,
            ),
            remote_base=remote_base or self.slurm_remote_base,
            status_poll_interval_seconds=self.slurm_poll_s,
            status_poll_max_interval_seconds=max(self.slurm_poll_s, self.slurm_poll_max_s),
        )
        compute = SlurmCompute(
            mode="slurm",
            slurm=slurm,
            default_launcher=BashLauncher(),
            pre_deployed_env_path=self.slurm_env_path,
        )
        return compute.run(
            context=context,
            payload_path=str(RUNNER_FILE),
            extra_slurm_opts=self.effective_request(request).slurm_opts(),
            extras=spec,
            extra_env=worker_env,
            poll_timeout=self.slurm_poll_timeout_s,
        )


__all__ = ["ComputeResource", "ResourceRequest", "WorkUnit", "WorkloadFailed", "RUNNER_FILE", "RUNNER_MODULE",
           "plan_packs", "pack_request", "auto_pack_slots"]
