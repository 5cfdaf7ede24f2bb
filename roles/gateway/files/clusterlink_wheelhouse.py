#!/usr/bin/env python3
# Copyright: Contributors to the clusterlink.fabric collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Prepare, on the controller, the wheelhouse that a gateway host installs from.

Run by the clusterlink.fabric.gateway role (delegate_to localhost, once per distinct target
Python/platform). The hosts have no internet access: everything they install comes from here.

Two modes:

* build (default): build the clusterlink-gateway wheel from ``--source`` and download its
  dependencies (and ``--package`` extras such as cryptography) as binary wheels for the target
  (``--python-version``, ``--machine``, ``--libc-version``) into a cache directory keyed by
  the source contents, the target and the options. A second run with the same inputs finds
  the cache and neither builds nor downloads anything.
* ``--wheelhouse DIR``: an operator-provided directory of wheels (air-gapped controller);
  nothing is built or downloaded, the directory is only described.

Prints one JSON document: ``changed`` (a new wheelhouse was made), ``wheelhouse`` (path),
``release`` (a short digest of the wheel files and of what gets installed; it names the
release directory on the hosts), ``version`` (of clusterlink-gateway), ``wheels`` and
``manifest`` ("sha256  file" lines). Only the standard library is used.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# Left out of the source digest and of the copy that is built: build products and tests.
IGNORED_DIRS = {
    "build",
    "dist",
    "tests",
    ".venv",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    ".mypy_cache",
    ".hypothesis",
    ".git",
}
IGNORED_SUFFIXES = (".pyc", ".pyo", ".egg-info", ".so")
GATEWAY_WHEEL = re.compile(r"^clusterlink_gateway-([^-]+)-.*\.whl$")
WHEEL_NAME = re.compile(r"^([A-Za-z0-9_.]+)-([^-]+)-")


class Failure(Exception):
    pass


def ignored(name: str) -> bool:
    return name in IGNORED_DIRS or name.endswith(IGNORED_SUFFIXES)


def source_digest(source: Path) -> str:
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(source):
        dirs[:] = sorted(d for d in dirs if not ignored(d))
        for name in sorted(files):
            if ignored(name):
                continue
            path = Path(root, name)
            digest.update(str(path.relative_to(source)).encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def platforms(machine: str, libc: str, libc_version: str) -> list[str]:
    """Wheel platform tags a glibc host of this version accepts (PEP 600 and legacy names)."""
    if libc != "glibc":
        raise Failure(f"unsupported C library {libc or 'unknown'!r} on the target (want glibc)")
    try:
        major, minor = (int(x) for x in libc_version.split(".")[:2])
    except ValueError:
        raise Failure(f"cannot read the target's glibc version {libc_version!r}") from None
    if major != 2 or minor < 17:
        raise Failure(f"glibc {libc_version} on the target is too old (want 2.17 or newer)")
    tags = [f"manylinux_2_{m}_{machine}" for m in range(minor, 4, -1)]
    tags += [f"manylinux2014_{machine}", f"manylinux2010_{machine}", f"manylinux1_{machine}"]
    return tags


def run(argv: list[str]) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        output = (proc.stdout + proc.stderr).strip()[-4000:]
        raise Failure(f"command failed ({proc.returncode}): {' '.join(argv)}\n{output}")


def has_setuptools() -> bool:
    try:
        import setuptools  # noqa: F401
    except ImportError:
        return False
    return True


def build(args: argparse.Namespace) -> tuple[Path, bool]:
    """The cached wheelhouse for these inputs, built if missing; (path, newly built)."""
    source = Path(args.source).resolve()
    if not (source / "pyproject.toml").is_file():
        raise Failure(f"{source}: no pyproject.toml (set clusterlink_gateway_source)")
    target_platforms = platforms(args.machine, args.libc, args.libc_version)
    key_data = {
        "source": source_digest(source),
        "python": args.python_version,
        "implementation": args.implementation,
        "platforms": target_platforms,
        "packages": sorted(args.package),
        "constraints": sorted(args.constraint),
        "pip_args": args.pip_arg,
    }
    key = hashlib.sha256(json.dumps(key_data, sort_keys=True).encode()).hexdigest()[:16]
    pytag = args.implementation + args.python_version.replace(".", "")
    cache = Path(os.path.expanduser(args.cache))
    final = cache / f"{pytag}-{args.machine}-{key}"
    if (final / "MANIFEST").is_file():
        return final, False
    cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=cache))
    try:
        src = work / "src"
        shutil.copytree(source, src, ignore=lambda _d, names: [n for n in names if ignored(n)])
        wheels = work / "wheels"
        wheels.mkdir()
        pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
        wheel_cmd = [*pip, "wheel", "--no-deps", "--no-cache-dir", "-w", str(wheels), *args.pip_arg]
        if has_setuptools():
            try:
                run([*wheel_cmd, "--no-build-isolation", str(src)])
            except Failure:
                run([*wheel_cmd, str(src)])
        else:
            run([*wheel_cmd, str(src)])
        built = [p for p in wheels.iterdir() if GATEWAY_WHEEL.match(p.name)]
        if len(built) != 1:
            raise Failure(f"expected one clusterlink_gateway wheel, found {built}")
        constraints = work / "constraints.txt"
        constraints.write_text("".join(f"{c}\n" for c in args.constraint))
        download = [*pip, "download", "--only-binary=:all:", "-d", str(wheels)]
        download += ["--python-version", args.python_version]
        download += ["--implementation", args.implementation, "--abi", pytag]
        for tag in target_platforms:
            download += ["--platform", tag]
        download += ["-c", str(constraints), *args.pip_arg, str(built[0]), *args.package]
        run(download)
        write_manifest(wheels)
        if final.exists():  # a concurrent run finished first
            return final, False
        wheels.rename(final)
        prune(cache, f"{pytag}-{args.machine}-", keep=args.keep, current=final)
        return final, True
    finally:
        shutil.rmtree(work, ignore_errors=True)


def prune(cache: Path, prefix: str, keep: int, current: Path) -> None:
    """Remove all but the ``keep`` newest wheelhouses of this target (never ``current``)."""
    found = sorted(
        (p for p in cache.iterdir() if p.name.startswith(prefix) and p.is_dir() and p != current),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for old in found[max(keep - 1, 0) :]:
        shutil.rmtree(old, ignore_errors=True)


def write_manifest(wheels: Path) -> str:
    lines = [f"{file_sha256(p)}  {p.name}\n" for p in sorted(wheels.glob("*.whl"))]
    text = "".join(lines)
    (wheels / "MANIFEST").write_text(text)
    return text


def describe(wheelhouse: Path, packages: list[str]) -> dict[str, object]:
    files = sorted(p for p in wheelhouse.glob("*.whl") if p.is_file())
    manifest = "".join(f"{file_sha256(p)}  {p.name}\n" for p in files)
    versions = [m.group(1) for p in files if (m := GATEWAY_WHEEL.match(p.name))]
    if not versions:
        raise Failure(f"{wheelhouse}: no clusterlink_gateway wheel")
    if len(set(versions)) > 1:
        raise Failure(f"{wheelhouse}: several clusterlink_gateway versions {sorted(set(versions))}")
    install = ["clusterlink-gateway", *sorted(packages)]
    digest = hashlib.sha256((manifest + "\n".join(install)).encode()).hexdigest()
    return {
        "wheelhouse": str(wheelhouse),
        "release": f"{versions[0]}-{digest[:12]}",
        "version": versions[0],
        "wheels": [p.name for p in files],
        "manifest": manifest,
        "install": install,
    }


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", help="the gateway's source directory (with pyproject.toml)")
    parser.add_argument("--cache", default="~/.cache/clusterlink/wheelhouse")
    parser.add_argument("--wheelhouse", help="use these wheels; build and download nothing")
    parser.add_argument("--python-version", default="3.11", help="target Python, X.Y")
    parser.add_argument("--implementation", default="cp")
    parser.add_argument("--machine", default="x86_64")
    parser.add_argument("--libc", default="glibc")
    parser.add_argument("--libc-version", default="2.17")
    parser.add_argument("--package", action="append", default=[], help="extra requirement")
    parser.add_argument("--constraint", action="append", default=[], help="pip constraint")
    parser.add_argument("--pip-arg", action="append", default=[], help="extra pip argument")
    parser.add_argument(
        "--keep", type=int, default=5, help="wheelhouses kept in the cache per target"
    )
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        if args.wheelhouse:
            path = Path(os.path.expanduser(args.wheelhouse)).resolve()
            if not path.is_dir():
                raise Failure(f"clusterlink_wheelhouse {path}: not a directory")
            changed = False
        else:
            if not args.source:
                raise Failure("--source or --wheelhouse is required")
            path, changed = build(args)
        result = describe(path, args.package)
    except (Failure, OSError) as exc:
        print(json.dumps({"failed": True, "msg": str(exc)}))
        return 1
    result["changed"] = changed
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
