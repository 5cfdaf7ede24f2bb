"""ClusterLink for bare metal: gateway daemon."""

__version__ = "0.1.0"
