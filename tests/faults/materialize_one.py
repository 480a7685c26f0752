"""Materialize one partition of one asset in this process (for the fault tests).

Usage: materialize_one.py HOME ASSET PARTITION   (PARTITION "a|b" for dataset|mode keys)
"""
import sys


def main(home: str, asset: str, partition: str) -> int:
    from cpb_jobs.demo import _materialize, prepare_environment

    prepare_environment(home)
    key = dict(zip(("dataset", "mode"), partition.split("|"))) if "|" in partition else partition
    label, ok, seconds, errors = _materialize(asset, key)
    print(f"{label} {'ok' if ok else 'FAILED'} {seconds:.1f}s", *errors, sep="\n", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
