"""cluster: the local launcher that plays docker compose for sessionha.

It starts memcached, the app servers and the proxy from one TOML topology as child
processes, streams their logs, and kills or restarts members on request.
"""

from .errors import ClusterError, TopologyError
from .topology import Member, Topology, load_topology

__all__ = ("ClusterError", "Member", "Topology", "TopologyError", "load_topology")
