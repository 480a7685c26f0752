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
        "CPB_HOME": "/shared/cpb",
    })
    assert (res.mode, res.slurm_host, res.slurm_port, res.slurm_user) == ("slurm", "login.example.org", 2222, "alice")
    assert res.slurm_key_path == str(key) and res.slurm_partition == "short"
    assert res.slurm_remote_base == "/scratch/alice/cpb" and res.slurm_env_path == "/shared/envs/cpb"
    assert res.slurm_account == "proj42" and res.slurm_qos is None and res.slurm_poll_s == 2.5
    assert res.cpb_home == "/shared/cpb"
    assert res.default_request == ResourceRequest(cpus=4, mem_mb=16000, time_min=90)


def test_blank_values_mean_unset(tmp_path):
    res = ComputeResource.from_env({"CPB_COMPUTE": "", "CPB_SLURM_PORT": " ", "CPB_SLURM_PARTITION": ""})
    assert res.mode == "local" and res.slurm_port == 22 and res.slurm_partition == ""


@pytest.mark.parametrize("env, message", [
    ({"CPB_COMPUTE": "cloud"}, "CPB_COMPUTE must be"),
    ({"CPB_SLURM_CPUS": "two"}, "CPB_SLURM_CPUS must be an integer"),
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
