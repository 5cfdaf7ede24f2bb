#!/usr/bin/env bash
# Copyright: Contributors to the clusterlink.fabric collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Run `ansible-test sanity --local` on this collection, on machines without Docker and without
# access to ansible-test's download host.
#
#   tools/ansible_test_bootstrap.sh                    # default tests on the default targets
#   tools/ansible_test_bootstrap.sh --test pylint      # extra arguments go to ansible-test sanity
#   SANITY_TARGETS="plugins/ roles/" tools/ansible_test_bootstrap.sh
#
# What it does:
#  1. A dedicated virtualenv with the pinned ansible-core (so ansible-test's --requirements
#     never installs anything into the project's .venv).
#  2. The pip bootstrap stand-in: ansible-test's per-test virtualenvs start by downloading a
#     get-pip script from a host that is unreachable here. We put a small stand-in into its
#     cache (~/.ansible/test/cache/get_pip_<version>.py) that bootstraps pip with ensurepip in a
#     child process (in-process ensurepip sets PIP_CONFIG_FILE=/dev/null, which hides the
#     machine's pip index/CA configuration) and then pip-installs what it was asked for
#     from the package index.
#  3. A copy of the collection (tracked and untracked-but-not-ignored files) at
#     <state>/ansible_collections/clusterlink/fabric, inside its own `git init` work tree,
#     which is the layout ansible-test needs.
#  4. ansible-test sanity --local --python $SANITY_PYTHON --requirements on the targets.
#
# Environment: SANITY_PYTHON (default 3.11), SANITY_HOME (state dir, default
# ~/.cache/clusterlink-sanity), ANSIBLE_CORE_VERSION (default 2.19.14),
# SANITY_TARGETS (paths relative to the collection root), SANITY_TESTS (--test/--skip-test
# options; default: all but changelog and pslint).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SANITY_PYTHON=${SANITY_PYTHON:-3.11}
SANITY_HOME=${SANITY_HOME:-$HOME/.cache/clusterlink-sanity}
ANSIBLE_CORE_VERSION=${ANSIBLE_CORE_VERSION:-2.19.14}
SANITY_TARGETS=${SANITY_TARGETS:-"galaxy.yml meta/ plugins/ roles/pki/ tests/unit/plugins/ tests/sanity/ tools/"}
# Every sanity test of ansible-core 2.19 that applies, less: changelog (the collection keeps no
# changelogs/ yet) and pslint (PowerShell; there is none). shellcheck runs if installed.
SANITY_TESTS=${SANITY_TESTS:---skip-test changelog --skip-test pslint}

python_bin=$(command -v "python$SANITY_PYTHON")
venv="$SANITY_HOME/venv-$SANITY_PYTHON"

# 1. ansible-test's own virtualenv
if [ ! -x "$venv/bin/ansible-test" ] ||
   [ "$("$venv/bin/python" -c 'import ansible; print(ansible.__version__)')" != "$ANSIBLE_CORE_VERSION" ]; then
  rm -rf "$venv"
  "$python_bin" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "ansible-core==$ANSIBLE_CORE_VERSION"
fi

# 2. pip bootstrap stand-in, for the pip version this ansible-test wants
pip_version=$("$venv/bin/python" - <<'EOF'
from types import SimpleNamespace
from ansible_test._internal.python_requirements import get_venv_packages
import sys
print(get_venv_packages(SimpleNamespace(version='%d.%d' % sys.version_info[:2]))['pip'])
EOF
)
cache="$HOME/.ansible/test/cache/get_pip_${pip_version//./_}.py"
mkdir -p "$(dirname "$cache")"
cat >"$cache" <<'EOF'
"""Stand-in for ansible-test's get-pip bootstrap script (made by tools/ansible_test_bootstrap.sh).

Bootstraps pip with ensurepip in a child process, then installs the requested packages.
"""
import subprocess
import sys

args = [arg for arg in sys.argv[1:] if arg not in ('--no-setuptools', '--no-wheel')]
subprocess.check_call([sys.executable, '-m', 'ensurepip', '--upgrade'])
subprocess.check_call([sys.executable, '-m', 'pip', 'install', *args])
EOF

# 3. the collection at .../ansible_collections/clusterlink/fabric, in its own git work tree
root="$SANITY_HOME/tree/ansible_collections/clusterlink/fabric"
rm -rf "$SANITY_HOME/tree"
mkdir -p "$root"
git -C "$REPO" ls-files -z --cached --others --exclude-standard |
  while IFS= read -r -d '' file; do [ -e "$REPO/$file" ] && printf '%s\0' "$file"; done |
  tar -C "$REPO" --null -T - -cf - | tar -C "$root" -xf -
git -C "$root" init -q

# 4. run (on the targets that exist)
cd "$root"
targets=()
for target in $SANITY_TARGETS; do [ -e "$target" ] && targets+=("$target"); done
# shellcheck disable=SC2086  # word splitting of the test and target lists is intended
exec "$venv/bin/ansible-test" sanity --local --python "$SANITY_PYTHON" --requirements \
  --color no $SANITY_TESTS "$@" "${targets[@]}"
