"""Lab: real Debian hosts (systemd + sshd) in network namespaces, for end-to-end tests.

Example::

    from tests.lab import Lab

    lab = Lab("e2e").create(hosts=["a", "b"], topology="flat")
    lab.run("a", "systemctl is-system-running")  # -> subprocess.CompletedProcess
    lab.hosts["b"].address  # "198.18.0.11"
    lab.destroy()

Command line: ``python3 -m tests.lab --help``. Needs root.
"""

from .image import ensure_image, image_path
from .lab import Host, Lab, Site, create_when_free, list_labs, state_root
from .remote import RemoteCommand
from .util import LabError

__all__ = [
    "Host",
    "Lab",
    "LabError",
    "RemoteCommand",
    "Site",
    "create_when_free",
    "ensure_image",
    "image_path",
    "list_labs",
    "state_root",
]
