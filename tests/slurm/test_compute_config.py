"""ComputeResource configuration from the environment (no cluster needed)."""
import pytest

from cpb_resources.compute import ComputeResource, ResourceRequest


def test_default_is_local():
    res = ComputeResource.from_env({})
    assert res.mode == "local"
    assert res.default_request == ResourceRequest(cpus=1, mem_mb=2048, time_min=60)


def test_slurm_settings_from_env(tmp_path):
    key = tmp_path / "id_ed25519"
    key.write_text("not a real key")
    res = ComputeResource.from_env({
        "CPB_COMPUTE": "SLURM ",
        "CPB_SLURM_HOST": "login.example.org",
        "CPB_SLURM_PORT": "2222",
        "CPB_SLURM_USER": "alice",
        "CPB_SLURM_KEY": str(key),
        "CPB_SLURM_KNOWN_HOSTS": str(tmp_path / "known_hosts"),
        "CPB_SLURM_PARTITION": "short",
        "CPB_SLURM_CPUS": "4",
        "CPB_SLURM_MEM_MB": "16000",
        "CPB_SLURM_TIME_MIN": "90",
        "CPB_SLURM_REMOTE_BASE": "/scratch/alice/cpb",
        "CPB_SLURM_ENV_PATH": "/shared/envs/cpb",
        "CPB_SLURM_ACCOUNT": "proj42",
        "CPB_SLURM_POLL_S": "2.5",
        "CPB_SLURM_POLL_MAX_S": "7",
        "CPB_HOME": "/shared/cpb",
    })
    assert (res.mode, res.slurm_host, res.slurm_port, res.slurm_user) == ("slurm", "login.example.org", 2222, "alice")
    assert res.slurm_key_path == str(key) and res.slurm_partition == "short"
    assert res.slurm_remote_base == "/scratch/alice/cpb" and res.slurm_env_path == "/shared/envs/cpb"
    assert res.slurm_account == "proj42" and res.slurm_qos is None and res.slurm_poll_s == 2.5
    assert res.slurm_poll_max_s == 7.0
    assert res.cpb_home == "/shared/cpb"
    assert res.default_request == ResourceRequest(cpus=4, mem_mb=16000, time_min=90)


def test_blank_values_mean_unset(tmp_path):
    res = ComputeResource.from_env({"CPB_COMPUTE": "", "CPB_SLURM_PORT": " ", "CPB_SLURM_PARTITION": ""})
    assert res.mode == "local" and res.slurm_port == 22 and res.slurm_partition == ""


@pytest.mark.parametrize("env, message", [
    ({"CPB_COMPUTE": "cloud"}, "CPB_COMPUTE must be"),
    ({"CPB_SLURM_CPUS": "two"}, "CPB_SLURM_CPUS must be an integer"),
    ({"CPB_SLURM_POLL_MAX_S": "soon"}, "CPB_SLURM_POLL_MAX_S must be a number"),
    ({"CPB_COMPUTE": "slurm", "CPB_SLURM_ENV_PATH": "/e"}, "CPB_SLURM_KEY"),
    ({"CPB_COMPUTE": "slurm", "CPB_SLURM_KEY": "/nonexistent/key", "CPB_SLURM_ENV_PATH": "/e"}, "SSH key not found"),
])
def test_bad_configuration_is_refused(env, message):
    with pytest.raises(ValueError, match=message):
        ComputeResource.from_env(env)


def test_slurm_needs_env_path(tmp_path):
    key = tmp_path / "k"
    key.write_text("x")
    with pytest.raises(ValueError, match="CPB_SLURM_ENV_PATH"):
        ComputeResource.from_env({"CPB_COMPUTE": "slurm", "CPB_SLURM_KEY": str(key)})


def test_resource_request_to_slurm_options():
    assert ResourceRequest(cpus=2, mem_mb=8192, time_min=150).slurm_opts() == {
        "cpus_per_task": 2, "mem": "8192M", "time_limit": "02:30:00"}
    assert ResourceRequest(time_min=5).time_limit == "00:05:00"
    with pytest.raises(ValueError):
        ResourceRequest(cpus=0)


def test_workload_reference_resolution():
    from cpb_resources.workloads import demo, resolve
    assert resolve("cpb_resources.workloads.demo:write_table") is demo.write_table
    with pytest.raises(ValueError, match="module:function"):
        resolve("cpb_resources.workloads.demo.write_table")
    with pytest.raises(AttributeError):
        resolve("cpb_resources.workloads.demo:nope")


EXAMPLE_PROFILE = __import__("pathlib").Path(__file__).resolve().parents[2] / "docs" / "site-profile.example.yaml"


def test_site_profile_gives_defaults_and_env_overrides(tmp_path):
    key = tmp_path / "hpc_key"
    key.write_text("not a real key")
    env = {"CPB_SITE_PROFILE": str(EXAMPLE_PROFILE), "CPB_SLURM_KEY": str(key), "CPB_SLURM_CPUS": "8"}
    res = ComputeResource.from_env(env)
    assert (res.mode, res.slurm_host, res.slurm_user, res.slurm_account) == (
        "slurm", "login.hpc.example.edu", "alice", "lab-perturb")
    assert res.slurm_key_path == str(key)
    assert res.slurm_cpus == 8 and res.slurm_mem_mb == 8000  # env wins, the profile fills the rest
    assert res.slurm_max_concurrent == 400 and res.max_retries == 2
    assert res.partition_for(ResourceRequest(kind="gpu")) == "gpu-a100"
    assert res.partition_for(ResourceRequest(kind="highmem")) == "bigmem"
    assert res.partition_for(ResourceRequest()) == "cpu"
    gpu = res.effective_request(ResourceRequest(kind="gpu"))
    assert gpu.gpus == 1 and gpu.slurm_opts()["gpus_per_node"] == 1
    assert res.effective_request(ResourceRequest(kind="gpu", gpus=4)).gpus == 4
    assert res.effective_request(ResourceRequest()).gpus == 0


@pytest.mark.parametrize("text, match", [
    ("key_path: /home/alice/.ssh/id\n", "key_path"),
    ("hostname: x\n", "unknown keys"),
    ("partitions: {fat: bigmem}\n", "unknown workload kinds"),
    ("key_env: NOT_SET_ANYWHERE\n", "NOT_SET_ANYWHERE"),
])
def test_bad_site_profile_names_file_and_key(tmp_path, text, match):
    prof = tmp_path / "site.yaml"
    prof.write_text(text)
    with pytest.raises(ValueError, match=match) as err:
        ComputeResource.from_env({"CPB_SITE_PROFILE": str(prof)})
    assert str(prof) in str(err.value)


def test_gpu_request_becomes_gres_in_the_sbatch_command(tmp_path):
    from dagster_slurm import SlurmQueueConfig, SlurmResource, SSHConnectionResource
    from dagster_slurm.pipes_clients.slurm_pipes_client import SlurmPipesClient

    client = object.__new__(SlurmPipesClient)  # only the command builder is used: no connection
    (tmp_path / "k").write_text("not a real key")
    client.slurm = SlurmResource(ssh=SSHConnectionResource(host="h", port=22, user="u", key_path=str(tmp_path / "k")),
                                 queue=SlurmQueueConfig(partition="gpu-a100", cpus=1, mem="1G", time_limit="01:00:00"))
    res = ComputeResource(mode="slurm", slurm_gpus=2)
    opts = res.effective_request(ResourceRequest(cpus=4, mem_mb=30000, time_min=90, kind="gpu")).slurm_opts()
    cmd = client._build_sbatch_command("j", "/w", "/o", "/e", "/s.sh", extra_opts=opts)
    assert "--gres=gpu:2" in cmd and "-c 4" in cmd and "-t 01:30:00" in cmd and "-p gpu-a100" in cmd
