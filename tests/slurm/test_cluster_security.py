"""The local one-node cluster opens no door: loopback-only daemons, a state folder
it refuses to trust unless it is root's alone, fresh secrets, and an exit trap
that cancels only the jobs of its own test run."""
from __future__ import annotations

import ipaddress
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slurm

ROOT = Path(__file__).resolve().parents[2]
SLURM_UP = ROOT / "scripts" / "slurm-up"
SLURM_DOWN = ROOT / "scripts" / "slurm-down"
DAEMONS = {"slurmctld", "slurmdbd", "slurmd", "sshd", "mariadbd"}


def _pid(path: Path) -> int:
    return int(re.sub(r"\D", "", path.read_text().splitlines()[0]))


def _daemon_pids(state: Path) -> dict[int, str]:
    files = {"slurmctld": state / "run/slurmctld.pid", "slurmdbd": state / "run/slurmdbd.pid",
             "slurmd": state / "run/slurmd.pid", "sshd": state / "run/sshd.pid",
             "mariadbd": state / "mysql/run/mariadbd.pid", "munged": state / "run/munge/munged.pid"}
    return {_pid(p): name for name, p in files.items()}


def listening_sockets() -> list[tuple[str, int]]:
    """(local address, pid) of every listening TCP socket `ss` reports with its process."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    rows = []
    for line in out.splitlines():
        fields = line.split()
        local = fields[3]
        for pid in re.findall(r"pid=(\d+)", line):
            rows.append((local.rsplit(":", 1)[0].strip("[]"), int(pid)))
    return rows


def test_every_daemon_listens_on_loopback_only(slurm_env):
    pids = _daemon_pids(Path(slurm_env["CPB_SLURM_DIR"]))
    ours = [(addr, pids[pid]) for addr, pid in listening_sockets() if pid in pids]
    # without this the test would pass on an empty list, e.g. when `ss` cannot see the processes
    assert {name for _, name in ours} >= DAEMONS, f"daemons without a listener found by ss: {ours}"
    exposed = [(addr, name) for addr, name in ours
               if addr == "*" or not ipaddress.ip_address(addr.split("%")[0]).is_loopback]
    assert not exposed, f"listening beyond loopback: {exposed}"


def test_secrets_are_private_and_derived(slurm_env):
    state = Path(slurm_env["CPB_SLURM_DIR"])
    for secret in ("etc/db.pass", "ssh/id_ed25519", "ssh/authorized_keys", "etc/slurmdbd.conf"):
        assert (state / secret).stat().st_mode & 0o077 == 0, secret
    derived = subprocess.run(["ssh-keygen", "-y", "-f", str(state / "ssh/id_ed25519")], capture_output=True,
                             text=True, check=True).stdout.split()[:2]
    assert (state / "ssh/authorized_keys").read_text().split()[:2] == derived
    assert "StrictModes yes" in (state / "ssh/sshd_config").read_text()


def test_no_anonymous_mariadb_accounts(slurm_env):
    sock = Path(slurm_env["CPB_SLURM_DIR"]) / "mysql/run/mysqld.sock"
    out = subprocess.run(["mariadb", "--no-defaults", f"--socket={sock}", "-uroot", "-N", "-e",
                          "SELECT COUNT(*) FROM mysql.global_priv WHERE User=''"],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == "0"


def _refused(state: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "CPB_SLURM_DIR": str(state)}
    return subprocess.run([str(SLURM_UP)], capture_output=True, text=True, env=env, timeout=60)


@pytest.mark.parametrize("case", ["other_owner", "world_writable", "symlink", "holds_symlink"])
def test_untrusted_state_folder_is_refused(tmp_path, case):
    state = tmp_path / "state"
    if case == "symlink":
        (tmp_path / "elsewhere").mkdir()
        state.symlink_to(tmp_path / "elsewhere")
    else:
        state.mkdir()
    if case == "other_owner":
        os.chown(state, 65534, 65534)  # nobody
    elif case == "world_writable":
        state.chmod(0o777)
    elif case == "holds_symlink":
        (state / "munge").mkdir()
        (state / "munge" / "munge.key").symlink_to("/etc/shadow")
    before = os.stat("/etc/shadow")
    proc = _refused(state)
    assert proc.returncode != 0
    assert "refusing state folder" in proc.stderr, proc.stderr
    after = os.stat("/etc/shadow")
    assert (after.st_uid, after.st_gid, after.st_mode) == (before.st_uid, before.st_gid, before.st_mode)


def test_state_folder_under_a_folder_others_can_write_is_refused(tmp_path):
    # pytest's tmp_path lies under /tmp (mode 1777): sshd's StrictModes would refuse logins there
    proc = _refused(tmp_path / "fresh")
    assert proc.returncode != 0 and "is not root's alone" in proc.stderr, proc.stderr


def _squeue_ids(env) -> set[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, env=env, check=True).stdout
    return set(out.split())


def test_exit_trap_cancels_only_its_own_jobs(slurm_env, tmp_path):
    env = {**os.environ, **slurm_env}
    state = Path(slurm_env["CPB_SLURM_DIR"])
    mine, theirs = state / "work" / "trap-mine", state / "work" / "trap-theirs"
    ids = {}
    for name, folder in (("mine", mine), ("theirs", theirs)):
        folder.mkdir(parents=True, exist_ok=True)
        out = subprocess.run(["sbatch", "--parsable", "-D", str(folder), "-o", "/dev/null", "--mem=16M",
                              "-t", "00:02:00", "--wrap", "sleep 120"],
                             capture_output=True, text=True, env=env, check=True).stdout
        ids[name] = out.strip().split(";")[0]
    try:
        assert {ids["mine"], ids["theirs"]} <= _squeue_ids(env)
        subprocess.run([str(SLURM_DOWN), "--jobs-under", str(mine)], env=env, check=True, capture_output=True)
        deadline = time.monotonic() + 20
        while ids["mine"] in _squeue_ids(env) and time.monotonic() < deadline:
            time.sleep(0.3)
        left = _squeue_ids(env)
        assert ids["mine"] not in left
        assert ids["theirs"] in left
        assert subprocess.run(["scontrol", "ping"], env=env, capture_output=True).returncode == 0
    finally:
        subprocess.run(["scancel", *ids.values()], env=env, capture_output=True)
