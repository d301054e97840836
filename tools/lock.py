"""Write or compare the install lock (`constraints.txt`) from the running Python's packages.

Run with the interpreter of the venv to lock, as `make lock` and `make test-latest` do:

    .venv-latest/bin/python tools/lock.py write constraints.txt
    .venv-latest/bin/python tools/lock.py diff constraints.txt

torch is left out: the Makefile installs it on its own (`TORCH=`), the CPU wheel here and a
CUDA build on a GPU machine, and a pin with a local version such as `+cpu` would refuse the
other. The project itself and pip's own tooling are left out too.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
from importlib import metadata
from pathlib import Path

from packaging.utils import canonicalize_name

UNLOCKED = {"redteam-gym", "torch", "pip", "setuptools", "wheel"}


def installed() -> dict[str, str]:
    """Canonical name -> version of every distribution this interpreter sees, less UNLOCKED."""
    found: dict[str, str] = {}
    for dist in metadata.distributions():
        name = canonicalize_name(dist.metadata["Name"] or "")
        if name and name not in UNLOCKED:
            found[name] = dist.version
    return dict(sorted(found.items()))


def read_lock(path: Path) -> dict[str, str]:
    """The `name==version` pins of a lock file (comments and blank lines skipped)."""
    pins: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep or not name.strip() or not version.strip():
            raise ValueError(f"{path}:{number}: expected 'name==version', got {raw!r}")
        pins[canonicalize_name(name)] = version.strip()
    return pins


def write(path: Path) -> None:
    pins = installed()
    header = [
        "# The package versions the last green `make test-latest` ran on; `make install` uses",
        "# them as pip constraints, so a fresh install is the tested set. Written by `make lock`",
        "# (do not edit by hand). torch is pinned by the Makefile's TORCH instead.",
        f"# {datetime.date.today().isoformat()}, Python {platform.python_version()}, "
        f"{len(pins)} packages",
    ]
    path.write_text("\n".join(header + [f"{n}=={v}" for n, v in pins.items()]) + "\n")
    print(f"wrote {len(pins)} pins to {path}")


def diff(path: Path) -> int:
    """Print what differs between the lock and this interpreter; the number of differences."""
    locked, now = read_lock(path), installed()
    changes = []
    for name in sorted(locked.keys() | now.keys()):
        old, new = locked.get(name, "-"), now.get(name, "-")
        if old != new:
            changes.append(f"  {name}: {old} -> {new}")
    print(f"{len(changes)} packages differ from {path}" + (":" if changes else ""))
    if changes:
        print("\n".join(changes))
    return len(changes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("write", "diff"))
    parser.add_argument("lock", type=Path, help="the lock file, e.g. constraints.txt")
    args = parser.parse_args(argv)
    if args.command == "write":
        write(args.lock)
    else:
        diff(args.lock)
    return 0


if __name__ == "__main__":
    sys.exit(main())
