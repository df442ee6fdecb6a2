"""Network names, shared by the proxy and sessionstore: `host:port` text and one DNS
name re-resolved under a timeout, its problems reported once per change.

Standard library only, and it imports neither of its users, so the wall between
them holds (the proxy never imports sessionstore, nor sessionstore the proxy).
"""

from netnames.addresses import address_text, usable_addresses
from netnames.watch import NameWatch, Resolver, getaddrinfo_resolver

__all__ = ("NameWatch", "Resolver", "address_text", "getaddrinfo_resolver", "usable_addresses")
