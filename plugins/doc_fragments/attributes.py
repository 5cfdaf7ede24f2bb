# Copyright: Contributors to the clusterlink.fabric collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


class ModuleDocFragment:
    """Attribute descriptions shared by the clusterlink.fabric modules.

    Modules add C(support) (and C(details)) per attribute.
    """

    DOCUMENTATION = r"""
options: {}
attributes:
  check_mode:
    description:
      - Can run in check_mode and return changed status prediction without modifying target.
  diff_mode:
    description:
      - Will return details on what has changed (or possibly needs changing in check_mode),
        when in diff mode.
  idempotent:
    description:
      - When run twice in a row outside check mode, with the same arguments, the second
        invocation indicates no change.
      - This assumes that the system controlled/queried by the module has not changed in a
        relevant way.
"""

    # Membership of the clusterlink.fabric.gateway action group (admin-API modules).
    ACTIONGROUP_GATEWAY = r"""
options: {}
attributes:
  action_group:
    description:
      - Use C(group/clusterlink.fabric.gateway) in C(module_defaults) to set defaults for this
        module.
    support: full
    membership:
      - clusterlink.fabric.gateway
"""
