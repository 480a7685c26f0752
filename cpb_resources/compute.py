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
``CPB_SLURM_GPUS``             ``--gres=gpu:N`` for ``gpu``-kind units      ``0``
``CPB_SLURM_MAX_CONCURRENT``   jobs of one step in flight at once          ``200``
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
import os
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
                "max_concurrent_jobs", "max_retries", "local_workers"}


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


def _thread_safe_dagster_slurm() -> None:
    from dagster_slurm.pipes_clients import slurm_pipes_client

    if not isinstance(slurm_pipes_client.signal, _MainThreadSignals):
        slurm_pipes_client.signal = _MainThreadSignals()


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
    slurm_partitions: dict[str, str] = {}  # site profile: workload kind (cpu/highmem/gpu) -> partition
    slurm_gpus: int = 0  # GPUs (--gres=gpu:N) for requests of kind "gpu" that name none themselves
    slurm_max_concurrent: int = 200  # jobs of one step in flight at once
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
        poll = (e.get("CPB_SLURM_POLL_S") or "").strip()

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
            slurm_poll_s=float(poll) if poll else float(profile.get("poll_s", 1.0)),
            slurm_max_concurrent=_env_int(e, "CPB_SLURM_MAX_CONCURRENT", int(profile.get("max_concurrent_jobs", 200))),
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

        SLURM: one ``sbatch`` per unit, all submitted together (at most
        ``slurm_max_concurrent`` in flight), each in its own remote folder under
        one folder of the step, logs streamed back through pipes. Local: at most
        ``local_workers`` subprocesses at a time. A unit that fails or is killed
        is run again up to ``max_retries`` times. When the step is interrupted
        (UI terminate, SIGTERM) every job of the step is cancelled (``scancel``)
        and every local subprocess is terminated before the interruption goes on.

        Each result's ``"compute"`` entry holds the unit key, the attempts, the
        request and, on SLURM, the job id and sacct's MaxRSS and elapsed time.

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
        workers = self.local_workers if self.mode == "local" else self.slurm_max_concurrent
        workers = max(1, min(workers, len(units)))
        context.log.info(f"compute[{self.mode}]: {len(units)} unit(s), {workers} at a time, step folder {step_tag}")
        t0 = time.monotonic()
        results: list[Optional[dict]] = [None] * len(units)
        failures: dict[int, str] = {}

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

        cancelled = threading.Event()
        if workers == 1:
            try:
                for i in range(len(units)):
                    attempt_all(i)
            except BaseException:
                cancelled.set()
                self._cancel_step(context, step_tag)
                raise
        else:
            pool = cf.ThreadPoolExecutor(workers, thread_name_prefix="cpb-unit")
            futures = [pool.submit(attempt_all, i) for i in range(len(units))]
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
        failed_jobs = self._add_sacct(context, step_tag, units, results, failures) if self.mode == "slurm" else {}
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

    def _run_unit(self, context, unit: WorkUnit, env: Optional[Mapping[str, str]], step_tag: str,
                  attempt: int) -> dict:
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
            if self.mode == "local":
                invocation = self._run_local(context, spec, worker_env)
            else:
                invocation = self._run_slurm(context, spec, worker_env, request,
                                             remote_base=self._unit_remote_base(step_tag, unit.key, attempt))
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

    def _unit_remote_base(self, step_tag: str, key: str, attempt: int) -> str:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in key)[:80]
        return f"{self._remote_root()}/cpb-steps/{step_tag}/{safe}-a{attempt}"

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

    def _add_sacct(self, context, step_tag, units, results, failures) -> dict[int, str]:
        """Add job id, state, MaxRSS and elapsed of each unit's last attempt (sacct) to its result;
        return the job ids of the failed units."""
        failed_jobs: dict[int, str] = {}
        try:
            rows = self.step_jobs(step_tag)
        except Exception as exc:
            context.log.warning(f"compute[slurm]: sacct unavailable for the step's metrics: {exc}")
            return failed_jobs
        by_unit: dict[str, dict] = {}
        for r in sorted(rows, key=lambda r: r["workdir"]):
            unit_dir = r["workdir"].split(f"/cpb-steps/{step_tag}/", 1)[1].split("/", 1)[0]
            by_unit[unit_dir.rsplit("-a", 1)[0]] = r  # the last attempt wins (sorted by attempt)
        for i, u in enumerate(units):
            safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in u.key)[:80]
            row = by_unit.get(safe)
            if row is None:
                continue
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

        _thread_safe_dagster_slurm()
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


__all__ = ["ComputeResource", "ResourceRequest", "WorkUnit", "WorkloadFailed", "RUNNER_FILE", "RUNNER_MODULE"]
