# Copyright: Contributors to the clusterlink.fabric collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Check that every documented role variable is real and every used one is documented.

For every role under roles/:

* every option of its meta/argument_specs.yml (any entry point) is used by the role: named in
  tasks/, templates/, handlers/, vars/ or defaults/ (other than its own definition line in
  defaults), or in a playbook of playbooks/ that uses the role or imports its task files;
* every ``clusterlink_*`` variable the role uses (tasks/, templates/, handlers/, vars/,
  defaults/) is in its argument specs, or is an inventory-contract name (the
  ``## Inventory contract`` section of docs/inventory.md: variables and group names shared by
  the roles), or is registered / set with set_fact / a loop_var inside the role.
  Internal ``__clusterlink_*`` variables and tag names (``tags:`` lines) are not checked.

Usage: python3 tools/check_role_variables.py [--docs FILE] [--playbooks DIR] [ROLES_DIR ...]
Exit status 0 when everything is in step, 1 otherwise (every problem is printed, naming the
role, the variable and the file).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from check_argument_specs import check_roles, load_specs  # a sibling script

ROOT = Path(__file__).resolve().parent.parent
SOURCE_DIRS = ("tasks", "templates", "handlers", "vars", "defaults")
USED = re.compile(r"(?<![\w.])clusterlink_[a-z0-9_]*[a-z0-9]")
SET_BY_ROLE = re.compile(
    r"^\s*(?:-\s+)?(?:register|loop_var):\s*['\"]?(clusterlink_[a-z0-9_]+)", re.MULTILINE
)
TAGS = re.compile(r"^\s*(?:-\s+)?tags:")  # tag names are not variables
DOC_NAME = re.compile(r"`(clusterlink_[a-z0-9_]+)")


def load_options(role: Path) -> tuple[Path | None, set[str]]:
    """The role's argument specs file and the options of all its entry points."""
    path, specs = load_specs(role)
    options: set[str] = set()
    for spec in specs.values():
        options |= set(((spec or {}).get("options")) or {})
    return path, options


def role_files(role: Path) -> list[Path]:
    files = []
    for name in SOURCE_DIRS:
        directory = role / name
        if directory.is_dir():
            files += sorted(p for p in directory.rglob("*") if p.is_file())
    return files


def set_fact_names(path: Path) -> set[str]:
    """Variables a task file sets with set_fact (keys of its set_fact mappings)."""
    names: set[str] = set()
    if path.suffix not in (".yml", ".yaml"):
        return names
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except yaml.YAMLError:
        return names

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("set_fact", "ansible.builtin.set_fact") and isinstance(value, dict):
                    names.update(k for k in value if isinstance(k, str))
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(data)
    return names


def role_playbooks(role: Path, playbooks: Path | None) -> list[Path]:
    """Playbooks that use the role or import one of its task files."""
    if playbooks is None or not playbooks.is_dir():
        return []
    marker = re.compile(rf"(clusterlink\.fabric\.{role.name}\b|roles/{role.name}/)")
    found = []
    for path in sorted(playbooks.glob("*.y*ml")):
        if marker.search(path.read_text(encoding="utf-8")):
            found.append(path)
    return found


def documented_names(docs: Path | None) -> set[str]:
    """Names in the ``## Inventory contract`` section of docs/inventory.md (to the next ``## ``)."""
    if docs is None or not docs.is_file():
        return set()
    names: set[str] = set()
    inside = False
    for line in docs.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            inside = line[3:].strip().lower().startswith("inventory contract")
        elif inside:
            names.update(DOC_NAME.findall(line))
    return names


def check_role(role: Path, contract: set[str], playbooks: Path | None = None) -> list[str]:
    problems: list[str] = []
    spec_path, options = load_options(role)
    files = role_files(role)
    texts = {path: path.read_text(encoding="utf-8", errors="replace") for path in files}
    set_here: set[str] = set()
    for path, text in texts.items():
        set_here |= set(SET_BY_ROLE.findall(text)) | set_fact_names(path)
    used: dict[str, Path] = {}
    for path, text in texts.items():
        for line in text.splitlines():
            if line.lstrip().startswith("#") or TAGS.match(line):
                continue
            for name in USED.findall(line):
                used.setdefault(name, path)
    # Uses of a documented option: anywhere but its own definition line in defaults/.
    for name in sorted(options):
        definition = re.compile(rf"^{re.escape(name)}\s*:")
        word = re.compile(rf"(?<![\w.]){re.escape(name)}(?!\w)")
        found = False
        for path, text in texts.items():
            in_defaults = path.parts[len(role.parts)] == "defaults"
            for line in text.splitlines():
                if line.lstrip().startswith("#") or (in_defaults and definition.match(line)):
                    continue
                if word.search(line):
                    found = True
                    break
            if found:
                break
        if not found:
            for path in role_playbooks(role, playbooks):
                if word.search(path.read_text(encoding="utf-8")):
                    found = True
                    break
        if not found:
            where = spec_path.relative_to(role.parent.parent) if spec_path else role
            problems.append(
                f"{role.name}: {name} is documented in {where} but the role never uses it"
            )
    for name, path in sorted(used.items()):
        if name in options or name in contract or name in set_here:
            continue
        problems.append(
            f"{role.name}: {name} is used in {path.relative_to(role.parent.parent)} but is "
            "not in the role's argument specs nor in docs/inventory.md"
        )
    return problems


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=Path, default=ROOT / "docs" / "inventory.md")
    parser.add_argument("--playbooks", type=Path, default=ROOT / "playbooks")
    parser.add_argument("roots", nargs="*", type=Path)
    args = parser.parse_args(argv)
    roots = args.roots or [ROOT / "roles"]
    contract = documented_names(args.docs)
    problems, checked = check_roles(roots, lambda role: check_role(role, contract, args.playbooks))
    for problem in problems:
        print(problem, file=sys.stderr)
    print(f"{checked} role(s) checked for variables, {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
