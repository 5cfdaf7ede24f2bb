# Copyright: Contributors to the clusterlink.fabric collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


class ModuleDocFragment:
    """Attributes and options shared by the modules that manage one admin-API object."""

    DOCUMENTATION = r"""
attributes:
  check_mode:
    support: full
    details:
      - The gateway validates values when the object is written, so check mode does not
        detect values it would reject (for example a port out of range).
  diff_mode:
    support: full
    details:
      - The diff shows name, labels and spec before and after.
  idempotent:
    support: full
options:
  labels:
    description:
      - Labels of the object. Access policies match the labels of peers
        (C(peer.clusterlink.net/labels.<key>)) and of exports
        (C(export.clusterlink.net/labels.<key>)); labels of imports and policies are
        informational.
      - Values are strings; numbers and booleans are turned into strings.
      - The labels on the gateway are replaced by exactly these.
    type: dict
    default: {}
  state:
    description:
      - Whether the object should exist on the gateway.
    type: str
    choices: [present, absent]
    default: present
"""
