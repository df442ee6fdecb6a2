"""Waiting for a future without cancelling it, bounded: what a response waits for its backup."""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any


async def until_done(future: asyncio.Future[Any], within: float | None) -> None:
    """asyncio.wait((future,), timeout=within) with less machinery: one future, one timer.
    Returns when `future` is done or `within` seconds have passed; never cancels it."""
    if future.done():
        return
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()
    wake = partial(_set_done, waiter)
    future.add_done_callback(wake)
    timer = loop.call_later(within, wake, None) if within is not None else None
    try:
        await waiter
    finally:
        if timer is not None:
            timer.cancel()
        future.remove_done_callback(wake)


def _set_done(waiter: asyncio.Future[None], _: object) -> None:
    if not waiter.done():
        waiter.set_result(None)
