"""The lean path: the common exchange done inline, on both sides.

A plain body-less request and a plain sized response, each whole in one read,
are checked by one regular expression each (wire.py) and passed on with no
parser callbacks, no per-header objects, no coroutine and, once warm, no
allocation of an exchange: `take_request` does what dispatching does when a
pooled upstream connection is at hand, `take_response` what finishing does for
a client with nothing queued. Anything they do not take, and every failure,
goes the general way (client.py, relay.py).
"""

from __future__ import annotations

from time import perf_counter
from typing import TYPE_CHECKING

from proxy.balancer import route_of_request
from proxy.exchange import Exchange
from proxy.message import BODYLESS_REQUEST
from proxy.wire import COOKIE_VALUES

if TYPE_CHECKING:
    import re

    from proxy.client import ClientConnection
    from proxy.relay import Relay
    from proxy.upstream import UpstreamConnection

# See response_plan.
ResponsePlan = tuple[int, int, int, int, bool]


def take_request(client: ClientConnection, data: bytes, match: re.Match[bytes]) -> bool:
    """The common request, taken whole: `match` (LEAN_REQUEST) checked it and found
    Host; the head for the upstream is the request, less its `Connection: keep-alive`
    line if any, plus the X-Forwarded-* lines.
    What Relay._dispatch and Relay._attach do, inline, when a pooled connection is at hand.

    False leaves the request to the other paths.
    """
    method, target, keep_alive_a, host, host_b, keep_alive_b = match.groups()
    forwarder = client.forwarder
    if target.startswith(forwarder.status_prefix):
        return False
    ex = client.spare
    if ex is None:
        ex = Exchange(method, target, True, True)
        ex.prepared = BODYLESS_REQUEST
        ex.request_complete = True
        head_only = ex.head_only
    else:
        # Only what a lean exchange changes needs resetting (see take_response).
        client.spare = None
        ex.method = method
        ex.target = target
        ex.head_only = head_only = method == b"HEAD"
        ex.route = None
        ex.sent = ex.response_started = False
        ex.started = perf_counter()
    if host is None:
        host = host_b
        keep_alive_line = 6 if keep_alive_b is not None else 0
    else:
        keep_alive_line = 3 if keep_alive_a is not None else 0
    if keep_alive_line:
        start, stop = match.span(keep_alive_line)
        head = b"".join(
            (data[:start], data[stop:-2], b"X-Forwarded-Host: ", host, client.forwarded_tail)
        )
    else:
        head = b"".join((data[:-2], b"X-Forwarded-Host: ", host, client.forwarded_tail))
    ex.head = head
    ex.lean = not head_only
    route = None
    if forwarder.sticky and (forwarder.cookie_marker in data or b";" in target):
        cookies = [value.decode("latin-1") for value in COOKIE_VALUES.findall(data)]
        route = ex.route = route_of_request(
            target.decode("latin-1"), cookies, forwarder.cookie_name
        )
    client.read_deadline = 0.0
    client.active = ex
    if not forwarder.tries_limit:
        client.fail(ex, 502, "no upstream left to try")
        return True
    name = forwarder.balancer.choose(route)
    if name is None:
        client.fail(ex, 502, "no live upstreams")
        return True
    upstream = ex.upstream = forwarder.upstreams[name]
    upstream.stats.active += 1
    idle = upstream.idle
    if not idle or idle[-1].closed:
        client.send_to(ex, upstream)
        return True
    # A pooled connection is between responses: nothing buffered, not close-delimited.
    conn = ex.conn = idle.pop()
    conn.reused = True
    conn.client = client
    conn.got_bytes = False
    conn.awaiting_head = True
    conn.idle_deadline = 0.0
    conn.read_deadline = forwarder.now + forwarder.read_timeout
    conn.transport.write(head)  # type: ignore[union-attr]
    ex.sent = True
    if client.paused_for_upstream:
        client.paused_for_upstream = False
        client.update_reading()
    return True


def response_plan(match: re.Match[bytes]) -> ResponsePlan:
    """What take_response needs of a head LEAN_RESPONSE matched: (end of the head,
    Content-Length, span of the Connection line to cut (0, 0 if none), whether the
    upstream keeps the connection alive)."""
    _, length, line, keep, line_b, keep_b, length_b = match.groups()
    if length is None:
        length, line, keep, group = length_b, line_b, keep_b, 5
    else:
        group = 3
    start, stop = match.span(group) if line is not None else (0, 0)
    return match.end(), int(length), start, stop, line is None or keep is not None


def take_response(client: Relay, conn: UpstreamConnection, data: bytes, plan: ResponsePlan) -> bool:
    """The lean path of a response: `data` is a whole response whose head `plan`
    describes; it goes to the client as it is, less its Connection line.
    What Relay._drop_upstream and Relay.finish do, inline, for a client with nothing queued.

    False leaves the response to the other paths.
    """
    ex = client.active
    transport = client.transport
    if (
        ex is None
        or ex.conn is not conn
        or not ex.lean
        or client.closing
        or transport is None
        or transport.is_closing()
    ):
        return False
    head_end, length, cut_start, cut_stop, upstream_keep_alive = plan
    if len(data) - head_end != length:
        return False
    conn.awaiting_head = False
    ex.response_started = True
    transport.write(data[:cut_start] + data[cut_stop:] if cut_stop else data)
    upstream = ex.upstream
    assert upstream is not None
    stats = upstream.stats
    stats.observe(perf_counter() - ex.started)
    forwarder = client.forwarder
    health = upstream.health
    if health.failing:
        health.record_success(forwarder.clock())
    ex.conn = None
    stats.active -= 1
    conn.client = None
    conn.read_deadline = 0.0
    idle = upstream.idle
    request_complete = ex.request_complete
    if (
        upstream_keep_alive
        and request_complete
        and not conn.closed
        and len(idle) < forwarder.keepalive
    ):
        conn.idle_deadline = forwarder.now + forwarder.keepalive_timeout
        idle.append(conn)  # Forwarder.release, inline
    else:
        conn.close()
    if (
        client.queue
        or client.reading_paused
        or client.paused_for_upstream
        or client.paused_for_queue
        or not request_complete
        or not ex.keep_alive
    ):
        client.finish(ex)
    else:
        client.active = None
        client.read_deadline = forwarder.now + forwarder.keepalive_timeout
        if (
            ex.prepared is BODYLESS_REQUEST
            and not ex.tried
            and not ex.stale_retry
            and not ex.body_chunks
        ):
            # Nothing refers to it any more: the next lean request may reuse it.
            client.spare = ex
    return True
