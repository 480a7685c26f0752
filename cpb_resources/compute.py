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
to the step's output metadata by dagster-slurm.

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
=============================  ==========================================  =================

``scripts/slurm-up`` prints exactly these settings for the local cluster.
"""
from __future__ import annotations

import getpass
import json
import os
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping, Optional

import dagster as dg

from cpb_resources.workloads import runner as _runner

RUNNER_FILE = Path(_runner.__file__).resolve()
RUNNER_MODULE = "cpb_resources.workloads.runner"
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")


class WorkloadFailed(Exception):
    """A workload raised or its job failed; the message carries the remote traceback."""


@dataclass(frozen=True)
class ResourceRequest:
    """What one unit of work needs. Used as SLURM's ``--cpus-per-task``,
    ``--mem`` and ``--time``; in local mode ``cpus`` caps BLAS/OpenMP threads."""

    cpus: int = 1
    mem_mb: int = 2048
    time_min: int = 60

    def __post_init__(self) -> None:
        if self.cpus < 1 or self.mem_mb < 1 or self.time_min < 1:
            raise ValueError(f"ResourceRequest values must be >= 1, got {self}")

    @property
    def time_limit(self) -> str:
        """SLURM ``HH:MM:SS``."""
        return f"{self.time_min // 60:02d}:{self.time_min % 60:02d}:00"

    def slurm_opts(self) -> dict[str, Any]:
        return {"cpus_per_task": self.cpus, "mem": f"{self.mem_mb}M", "time_limit": self.time_limit}


def _env_int(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = (environ.get(name) or "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None


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
    # Both modes
    cpb_home: Optional[str] = None
    local_python: Optional[str] = None

    # ---------------------------------------------------------------- config
    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None) -> "ComputeResource":
        """Build from ``CPB_COMPUTE`` / ``CPB_SLURM_*`` (see the module docstring)."""
        e = os.environ if environ is None else environ
        mode = (e.get("CPB_COMPUTE") or "local").strip().lower()
        if mode not in ("local", "slurm"):
            raise ValueError(f"CPB_COMPUTE must be 'local' or 'slurm', got {mode!r}")
        poll = (e.get("CPB_SLURM_POLL_S") or "").strip()
        res = cls(
            mode=mode,  # type: ignore[arg-type]
            slurm_host=_env_str(e, "CPB_SLURM_HOST") or "127.0.0.1",
            slurm_port=_env_int(e, "CPB_SLURM_PORT", 22),
            slurm_user=_env_str(e, "CPB_SLURM_USER"),
            slurm_key_path=_env_str(e, "CPB_SLURM_KEY"),
            slurm_known_hosts=_env_str(e, "CPB_SLURM_KNOWN_HOSTS"),
            slurm_partition=_env_str(e, "CPB_SLURM_PARTITION") or "",
            slurm_cpus=_env_int(e, "CPB_SLURM_CPUS", 1),
            slurm_mem_mb=_env_int(e, "CPB_SLURM_MEM_MB", 2048),
            slurm_time_min=_env_int(e, "CPB_SLURM_TIME_MIN", 60),
            slurm_remote_base=_env_str(e, "CPB_SLURM_REMOTE_BASE"),
            slurm_env_path=_env_str(e, "CPB_SLURM_ENV_PATH"),
            slurm_account=_env_str(e, "CPB_SLURM_ACCOUNT"),
            slurm_qos=_env_str(e, "CPB_SLURM_QOS"),
            slurm_poll_s=float(poll) if poll else 1.0,
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

        Raises :class:`WorkloadFailed` (with the remote traceback in its
        message) when the workload raises, the job fails, or it is cancelled.
        """
        request = request or self.default_request
        spec = {"workload": workload, "params": dict(params)}
        try:
            json.dumps(spec)
        except TypeError as exc:
            raise TypeError(f"params of {workload} must be JSON-able: {exc}") from None
        home = self._home()
        err_dir = home / "compute" / "errors"
        err_dir.mkdir(parents=True, exist_ok=True)
        err_file = err_dir / f"{uuid.uuid4().hex}.txt"
        worker_env = {
            "CPB_HOME": str(home),
            _runner.ERROR_FILE_ENV: str(err_file),
            _runner.MODE_ENV: self.mode,
            **{v: str(request.cpus) for v in THREAD_ENV_VARS},
            **(dict(env) if env else {}),
        }
        context.log.info(f"compute[{self.mode}]: {workload} with {request}")
        t0 = time.monotonic()
        try:
            if self.mode == "local":
                invocation = self._run_local(context, spec, worker_env)
            else:
                invocation = self._run_slurm(context, spec, worker_env, request)
        except Exception as exc:
            remote = err_file.read_text() if err_file.exists() else None
            if remote:
                raise WorkloadFailed(remote) from exc
            raise WorkloadFailed(f"workload {workload} failed in {self.mode} mode: {type(exc).__name__}: {exc}") from exc
        finally:
            err_file.unlink(missing_ok=True)
        result = None
        for msg in invocation.get_custom_messages():
            if isinstance(msg, dict) and _runner.RESULT_KEY in msg:
                result = msg[_runner.RESULT_KEY]
        if result is None:
            raise WorkloadFailed(f"workload {workload} ended without sending a result ({self.mode} mode)")
        result.setdefault("compute", {})["step_wall_s"] = round(time.monotonic() - t0, 3)
        return result

    def _run_local(self, context, spec: dict, worker_env: dict):
        client = dg.PipesSubprocessClient(env=worker_env)
        python = self.local_python or sys.executable
        return client.run(context=context, command=[python, "-m", RUNNER_MODULE], extras=spec)

    def _run_slurm(self, context, spec: dict, worker_env: dict, request: ResourceRequest):
        self.check()
        from dagster_slurm import BashLauncher, SlurmQueueConfig, SlurmResource, SSHConnectionResource
        from dagster_slurm import ComputeResource as SlurmCompute

        ssh = SSHConnectionResource(
            host=self.slurm_host,
            port=self.slurm_port,
            user=self.slurm_user or getpass.getuser(),
            key_path=self.slurm_key_path,
            known_hosts_file=self.slurm_known_hosts,
            host_key_checking="strict",
        )
        slurm = SlurmResource(
            ssh=ssh,
            queue=SlurmQueueConfig(
                partition=self.slurm_partition,
                cpus=self.slurm_cpus,
                mem=f"{self.slurm_mem_mb}M",
                time_limit=self.default_request.time_limit,
                account=self.slurm_account,
                qos=self.slurm_qos,
            ),
            remote_base=self.slurm_remote_base,
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
            extra_slurm_opts=request.slurm_opts(),
            extras=spec,
            extra_env=worker_env,
            poll_timeout=self.slurm_poll_timeout_s,
        )


__all__ = ["ComputeResource", "ResourceRequest", "WorkloadFailed", "RUNNER_FILE", "RUNNER_MODULE"]
