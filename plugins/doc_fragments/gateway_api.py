# Copyright: Contributors to the clusterlink.fabric collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


class ModuleDocFragment:
    """Connection options of the modules that talk to a gateway's admin API."""

    DOCUMENTATION = r"""
options:
  socket:
    description:
      - Path of the gateway's admin API unix socket on the target.
      - The user the module runs as must be able to connect to it (the socket is mode V(0660),
        group C(clusterlink) by default); use C(become) or add the user to that group.
      - Ignored when O(url) is set.
    type: path
    default: /run/clusterlink/admin.sock
  url:
    description:
      - Base URL of the gateway's optional admin TCP listener, for example
        V(https://gw1.example.com:9443). When set, the module uses it instead of O(socket).
      - The listener requires a client certificate issued by the admin CA (never the fabric
        CA); see O(client_cert), O(client_key) and O(ca_path).
    type: str
  client_cert:
    description:
      - PEM client certificate (from the admin CA) for O(url). It may also contain the key.
    type: path
  client_key:
    description:
      - PEM private key of O(client_cert), when it is not in that file.
      - The path is not secret; the key itself is never read into the module's results.
    type: path
  ca_path:
    description:
      - PEM bundle of the CA that issued the admin listener's server certificate, for O(url).
      - Defaults to the system trust store.
    type: path
  timeout:
    description:
      - Seconds to wait for each admin API request.
    type: int
    default: 30
notes:
  - The modules talk to the admin API of the gateway on the target host, so they run on the
    gateway hosts (not on the controller), and need nothing beyond the Python standard library
    and ansible-core there.
  - All options of this fragment can be set once per play with
    C(module_defaults) and the action group C(group/clusterlink.fabric.gateway).
"""
