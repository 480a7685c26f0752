"""Which Dagster instance a command records in: `prepare_environment`'s rule for $CPB_HOME / $DAGSTER_HOME."""
import os

import pytest

from cpb_jobs.demo import prepare_environment


@pytest.mark.parametrize("env_cpb, env_dagster, home, expect_dagster", [
    # `make` exports both for .cpb; `cpb … --home other` must use other's instance, not .cpb's
    ("made", "made/dagster", "other", "other/dagster"),
    # --home naming the exported home keeps an explicitly chosen $DAGSTER_HOME
    ("made", "elsewhere/dagster", "made", "elsewhere/dagster"),
    # no --home: the environment decides
    ("made", "elsewhere/dagster", None, "elsewhere/dagster"),
    (None, None, "other", "other/dagster"),
])
def test_dagster_home_follows_an_explicit_home(tmp_path, monkeypatch, env_cpb, env_dagster, home, expect_dagster):
    for var, value in (("CPB_HOME", env_cpb), ("DAGSTER_HOME", env_dagster)):
        if value is None:
            monkeypatch.delenv(var, raising=False)
        else:
            monkeypatch.setenv(var, str(tmp_path / value))
    cpb_home = prepare_environment(None if home is None else str(tmp_path / home))

    assert os.environ["DAGSTER_HOME"] == str(tmp_path / expect_dagster)
    assert os.environ["CPB_HOME"] == str(cpb_home)
    assert (tmp_path / expect_dagster / "dagster.yaml").exists()
