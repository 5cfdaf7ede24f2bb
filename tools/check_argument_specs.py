# Copyright: Contributors to the clusterlink.fabric collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Check that every role's defaults and meta/argument_specs.yml are in step.

For every role under roles/ and every entry point in its argument specs (``main`` reads
defaults/main.yml or defaults/main/*.yml; entry point ``X`` reads defaults/X.yml if present):

* the variables in the defaults and the options in the spec are the same set;
* each option documents its default with ``default:``, equal to the value in the defaults
  (an option whose default is null may leave ``default:`` out);
* a role with defaults has a meta/argument_specs.yml (or .yaml) with a ``main`` entry point.

Usage: python3 tools/check_argument_specs.py [ROLES_DIR ...]   (default: roles/ next to tools/)
Exit status 0 when everything is in step, 1 otherwise (every problem is printed).
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml


def load_yaml(path):
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle) or {}


def load_defaults(role, entry_point):
    """The role's default variables for an entry point, or None when it has no defaults."""
    directory = role / "defaults"
    candidates = [directory / f"{entry_point}.yml", directory / f"{entry_point}.yaml"]
    found = [path for path in candidates if path.is_file()]
    if (directory / entry_point).is_dir():
        found += sorted(
            p for p in (directory / entry_point).iterdir() if p.suffix in (".yml", ".yaml")
        )
    if not found:
        return None
    values = {}
    for path in found:
        data = load_yaml(path)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: not a mapping of variables")
        values.update(data)
    return values


def load_specs(role):
    for name in ("argument_specs.yml", "argument_specs.yaml"):
        path = role / "meta" / name
        if path.is_file():
            specs = load_yaml(path).get("argument_specs")
            if not isinstance(specs, dict):
                raise ValueError(f"{path}: no argument_specs mapping")
            return path, specs
    return None, {}


def check_role(role):
    problems = []
    spec_path, specs = load_specs(role)
    main_defaults = load_defaults(role, "main")
    if spec_path is None:
        if main_defaults is not None:
            problems.append(f"{role.name}: has defaults but no meta/argument_specs.yml")
        return problems
    if "main" not in specs and main_defaults is not None:
        problems.append(f'{role.name}: {spec_path.name} has no "main" entry point')
    for entry_point, spec in specs.items():
        options = (spec or {}).get("options") or {}
        defaults = load_defaults(role, entry_point)
        if defaults is None:
            if entry_point == "main" and options:
                problems.append(
                    f"{role.name}: {spec_path.name} has options but there is no defaults/main.yml"
                )
            continue
        where = f"{role.name} ({entry_point})"
        for name in sorted(set(defaults) - set(options)):
            problems.append(f"{where}: {name} is in defaults but not in the argument specs")
        for name in sorted(set(options) - set(defaults)):
            problems.append(f"{where}: {name} is in the argument specs but not in defaults")
        for name in sorted(set(options) & set(defaults)):
            option = options[name] or {}
            if "default" in option:
                if option["default"] != defaults[name]:
                    problems.append(
                        f"{where}: {name}: argument specs default "
                        f"{option['default']!r} != defaults value {defaults[name]!r}"
                    )
            elif defaults[name] is not None:
                problems.append(
                    f"{where}: {name}: the argument specs do not document the "
                    f"default {defaults[name]!r}"
                )
    return problems


def check_roles(roots, check):
    """``check(role)`` for every role directory under ``roots``: (problems, roles checked)."""
    problems, checked = [], 0
    for root in roots:
        if not root.is_dir():
            problems.append(f"{root}: not a directory")
            continue
        for role in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            checked += 1
            try:
                problems += check(role)
            except (OSError, ValueError, yaml.YAMLError) as exc:
                problems.append(f"{role.name}: {exc}")
    return problems, checked


def main(argv):
    roots = [Path(arg) for arg in argv] or [Path(__file__).resolve().parent.parent / "roles"]
    problems, checked = check_roles(roots, check_role)
    for problem in problems:
        print(problem, file=sys.stderr)
    print(f"{checked} role(s) checked, {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
