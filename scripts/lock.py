"""Pin what a fresh machine installs (the one command: `python scripts/lock.py`).

Writes requirements.lock: every package that berth and its `test` extra need,
at one exact version each, with the hashes of every file PyPI has for it,
resolved by uv for every Python from 3.11 and every platform (markers say which
lines apply where, so a Debian with Python 3.11 or 3.13 installs from the same
file). deploy/install.sh installs exactly this, with `--require-hashes`.
Regenerating keeps every pin that still fits pyproject.toml (uv prefers the
versions already in the output file); `--upgrade` asks for the newest versions.

With --check (CI, offline, no uv needed) it fails when the lock no longer
satisfies pyproject.toml: a requirement of the package or of its test extra
that has no pin for the environment, or a pin outside its specifier, or a pin
without hashes. Whether the pins satisfy each other is checked after they are
installed, by `pip check` in deploy/install.sh.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"
LOCK = ROOT / "requirements.lock"
EXTRAS = ("test",)
COMMAND = "python scripts/lock.py"

# The environments --check judges the lock for: the machine it runs on, and the
# documented target (a Debian with CPython 3.11 on x86_64).
TARGET: dict[str, str] = {
    "implementation_name": "cpython",
    "implementation_version": "3.11.2",
    "os_name": "posix",
    "platform_machine": "x86_64",
    "platform_python_implementation": "CPython",
    "platform_system": "Linux",
    "python_full_version": "3.11.2",
    "python_version": "3.11",
    "sys_platform": "linux",
}


def here() -> dict[str, str]:
    """The marker environment of the interpreter running this script."""
    return {key: str(value) for key, value in default_environment().items()}


def compile_lock(upgrade: bool) -> int:
    """Resolve with uv into requirements.lock."""
    uv = shutil.which("uv") or shutil.which("uv", path=str(Path(sys.executable).parent))
    if uv is None:
        print("error: uv not found; `pip install -e '.[test]'` installs it", file=sys.stderr)
        return 1
    command = [
        uv,
        "pip",
        "compile",
        str(PYPROJECT.relative_to(ROOT)),
        *(f"--extra={extra}" for extra in EXTRAS),
        "--universal",
        "--python-version=3.11",
        "--generate-hashes",
        # Only PyPI: the lock must install on a machine that reaches nothing else,
        # whatever indexes this machine's pip or uv configuration adds.
        "--no-config",
        "--index-url=https://pypi.org/simple",
        f"--custom-compile-command={COMMAND}",
        f"--output-file={LOCK.relative_to(ROOT)}",
        "--quiet",
    ]
    if upgrade:
        command.append("--upgrade")
    return subprocess.run(command, cwd=ROOT).returncode


def lock_pins(text: str) -> list[tuple[Requirement, bool]]:
    """Each pinned line of a lock, with whether it carries at least one hash."""
    pins = []
    for logical in text.replace("\\\n", " ").splitlines():
        line = logical.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        requirement_text, *options = line.split(" --")
        has_hash = any(option.startswith("hash=") for option in options)
        pins.append((Requirement(requirement_text.strip()), has_hash))
    return pins


def project_requirements(pyproject: dict[str, object]) -> list[Requirement]:
    project = pyproject["project"]
    assert isinstance(project, dict)
    texts = list(project.get("dependencies", []))
    for extra in EXTRAS:
        texts.extend(project.get("optional-dependencies", {}).get(extra, []))
    return [Requirement(text) for text in texts]


def problems(
    lock_text: str, requirements: list[Requirement], environments: list[dict[str, str]]
) -> list[str]:
    """What makes the lock fail to satisfy the requirements; empty when it does."""
    found: list[str] = []
    pins = lock_pins(lock_text)
    exact: list[tuple[Requirement, Version]] = []
    for pin, has_hash in pins:
        specifiers = list(pin.specifier)
        if len(specifiers) == 1 and specifiers[0].operator == "==":
            exact.append((pin, Version(specifiers[0].version)))
        else:
            found.append(f"{pin}: a lock line must pin one exact version (==)")
        if not has_hash:
            found.append(f"{pin}: no --hash; regenerate with `{COMMAND}`")
    for environment in environments:
        pinned = {
            canonicalize_name(pin.name): version
            for pin, version in exact
            if pin.marker is None or pin.marker.evaluate(environment)
        }
        where = f"Python {environment['python_full_version']} on {environment['sys_platform']}"
        for requirement in requirements:
            if requirement.marker is not None and not requirement.marker.evaluate(
                {**environment, "extra": ""}
            ):
                continue
            name = canonicalize_name(requirement.name)
            version = pinned.get(name)
            if version is None:
                found.append(f"{requirement}: in pyproject.toml but not pinned for {where}")
            elif not requirement.specifier.contains(version, prereleases=True):
                found.append(f"{requirement}: the lock pins {name}=={version} ({where})")
    return sorted(set(found))


def check() -> int:
    requirements = project_requirements(tomllib.loads(PYPROJECT.read_text()))
    environments = [here(), TARGET]
    found = problems(LOCK.read_text(), requirements, environments)
    for problem in found:
        print(f"stale lock: {problem}", file=sys.stderr)
    if found:
        print(f"requirements.lock does not satisfy pyproject.toml; run `{COMMAND}`", file=sys.stderr)
        return 1
    print(f"requirements.lock satisfies pyproject.toml ({len(requirements)} requirements)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="fail if the lock does not satisfy pyproject.toml")
    mode.add_argument("--upgrade", action="store_true", help="re-resolve to the newest allowed versions")
    args = parser.parse_args()
    if args.check:
        return check()
    status = compile_lock(args.upgrade)
    return status or check()


if __name__ == "__main__":
    sys.exit(main())
