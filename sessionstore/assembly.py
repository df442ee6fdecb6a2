"""build_manager: the one place a SessionManager's parts are made from settings.

The manager itself is handed ready parts (STYLE: inject, don't construct); this function
makes them: the node tracker, one MemcachedClient per listed node (or the ones given, e.g.
in tests), the NodeStore around them, backups, locks, the backup queue and scheduler, and,
with `memcached_nodes = "dns:NAME:PORT"`, the discovery loop (`resolver`, name ->
addresses, replaces the event loop's getaddrinfo, e.g. in tests).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from .backup import SessionBackup
from .backup_queue import BackupQueue
from .client import MemcachedClient
from .locking import SessionLocks
from .manager import SessionManager
from .node_store import NodeStore
from .nodes import NodeTracker
from .resolver import NodeDiscovery, Resolver, getaddrinfo_resolver
from .scheduler import BackupScheduler
from .settings import SessionStoreSettings
from .stats import Stats


def build_manager(settings: SessionStoreSettings, *,
                  clients: Mapping[str, MemcachedClient] | None = None,
                  clock: Callable[[], float] = time.time,
                  resolver: Resolver | None = None) -> SessionManager:
    """A SessionManager for `settings`, with every part it uses made here."""
    dns = settings.discovery
    if resolver is not None and dns is None:
        raise ValueError("resolver= needs memcached_nodes = \"dns:NAME:PORT\"")
    stats = Stats()
    tracker = NodeTracker(settings.nodes, settings.failover, settings.node_retry_interval,
                          discovered=dns is not None)
    owned: dict[str, MemcachedClient] = dict(clients) if clients is not None else {
        node.id: MemcachedClient(node=node.id, host=node.host, port=node.port,
                                 operation_timeout=settings.operation_timeout)
        for node in settings.nodes
    }
    store = NodeStore(clients=owned, tracker=tracker, stats=stats, clock=clock)
    backup = SessionBackup(store=store, settings=settings, stats=stats, clock=clock)
    locks = SessionLocks(store=store, prefix=settings.storage_key_prefix,
                         lock_timeout=settings.lock_timeout, stats=stats, clock=clock)
    sticky = settings.sticky
    scheduler = BackupScheduler(
        queue=BackupQueue(backup=backup, stats=stats), locks=locks, stats=stats,
        backup_async=settings.session_backup_async,
        backup_timeout=settings.session_backup_timeout,
        degraded=lambda: sticky and not tracker.any_alive(clock()))
    discovery = None if dns is None else NodeDiscovery(
        dns=dns, tracker=tracker, clients=owned, stats=stats,
        operation_timeout=settings.operation_timeout, interval=settings.resolver_valid,
        resolver=resolver or getaddrinfo_resolver)
    return SessionManager(settings=settings, stats=stats, store=store, backup=backup,
                          locks=locks, scheduler=scheduler, discovery=discovery, clock=clock)
