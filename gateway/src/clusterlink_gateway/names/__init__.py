"""DNS names for imports: ``<import>.<zone>``, answered by the gateway on a loopback address."""

from .answer import Record, answer, parse_zone
from .server import NameServer

__all__ = ["NameServer", "Record", "answer", "parse_zone"]
