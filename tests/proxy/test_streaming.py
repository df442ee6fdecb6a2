"""200 MB each way through a proxy process: bodies stream, resident memory stays flat."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from tests.proxy.support import read_response, serving
from tests.support.ports import free_port, wait_for_port

SIZE = 200 * 1024 * 1024
PIECE = b"\x5a" * (1024 * 1024)
REPO = Path(__file__).resolve().parents[2]


def resident_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        head = await reader.readuntil(b"\r\n\r\n")
        if head.startswith(b"POST"):
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            received = 0
            while received < length:
                received += len(await reader.read(1024 * 1024))
            answer = str(received).encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(answer), answer))
        elif head.startswith(b"GET /download"):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % SIZE)
            for _ in range(SIZE // len(PIECE)):
                writer.write(PIECE)
                await writer.drain()
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()


def start_proxy(upstream_port: int) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = dict(
        os.environ,
        LISTEN=f"127.0.0.1:{port}",
        UPSTREAMS=f"app1=127.0.0.1:{upstream_port}",
        CLIENT_MAX_BODY_SIZE="0",
        HEALTH_INTERVAL="0",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "proxy"], cwd=REPO, env=env, stderr=subprocess.DEVNULL
    )
    try:
        wait_for_port("127.0.0.1", port)
    except TimeoutError:
        process.kill()
        process.wait()
        raise
    return process, port


async def test_200_mb_each_way_in_bounded_memory() -> None:
    async with serving(upstream) as upstream_port:
        process, port = await asyncio.to_thread(start_proxy, upstream_port)
        peak = 0
        stop = asyncio.Event()

        async def watch() -> None:
            nonlocal peak
            while not stop.is_set():
                peak = max(peak, resident_kb(process.pid))
                await asyncio.sleep(0.02)

        try:
            async with asyncio.timeout(60):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                for _ in range(3):  # warm up: imports, pools, first buffers
                    writer.write(b"GET /small HTTP/1.1\r\nHost: h\r\n\r\n")
                    await read_response(reader)
                baseline = resident_kb(process.pid)
                watcher = asyncio.create_task(watch())

                writer.write(
                    b"POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % SIZE
                )
                for _ in range(SIZE // len(PIECE)):
                    writer.write(PIECE)
                    await writer.drain()
                uploaded = await read_response(reader)
                assert uploaded.body == str(SIZE).encode()

                writer.write(b"GET /download HTTP/1.1\r\nHost: h\r\n\r\n")
                head = await reader.readuntil(b"\r\n\r\n")
                assert b"Content-Length: %d" % SIZE in head
                downloaded = 0
                while downloaded < SIZE:
                    chunk = await reader.read(1024 * 1024)
                    assert chunk
                    downloaded += len(chunk)
                writer.close()
                stop.set()
                await watcher
        finally:
            process.terminate()
            returncode = await asyncio.to_thread(process.wait, 10)
    assert returncode == 0  # SIGTERM: a graceful stop
    growth_mb = (peak - baseline) / 1024
    print(f"proxy resident memory: baseline {baseline} kB, peak {peak} kB")
    assert downloaded == SIZE
    assert growth_mb < 50, f"resident memory grew by {growth_mb:.1f} MB"
