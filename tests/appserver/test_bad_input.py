"""Hostile and broken input: a clear 4xx or ignored as Tomcat would, never a 500."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from tests.support.memcached import MemcachedProcess

from .apps import AppClient, Client
from .memcached_stats import command_counts

JSON = {"Accept": "application/json"}
UNKNOWN_ID = "0123456789ABCDEF0123456789ABCDEF-n1.app1"


async def session_of(client: Client, **kwargs: Any) -> dict[str, Any]:
    async with client.get("/test", headers=JSON | kwargs.pop("headers", {}), **kwargs) as response:
        assert response.status == 200
        return dict(await response.json())


BAD_COOKIES = (
    "<script>",
    "../../etc/passwd",
    "x" * 4000,
    "G" * 32 + "-n1.app1",
    UNKNOWN_ID,
    UNKNOWN_ID.replace("-n1", "-n9"),
    "%00%0d%0a",
    "0123456789abcdef-n1.app1 delete",
    "",
)
BAD_PATH_PARAMETERS = (
    ";jsessionid=<b>",
    ";jsessionid=" + "A" * 3000,
    ";jsessionid=" + UNKNOWN_ID,
    ";jsessionid=",
    ";jsessionid=%FF%FE",
    ";jsessionid=a;jsessionid=b",
)


async def test_a_bad_or_unknown_cookie_gets_a_fresh_session(app_client: AppClient) -> None:
    client = await app_client()
    for cookie in BAD_COOKIES:
        client.session.cookie_jar.clear()  # only the hostile cookie goes out
        async with client.get(
            "/test", headers=JSON | {"Cookie": f"JSESSIONID={cookie}"}
        ) as response:
            assert response.status == 200, cookie
            body = await response.json()
        assert body["new"] is True and body["session_id"] != cookie
        assert response.cookies["JSESSIONID"].value == body["session_id"]


async def test_a_bad_or_unknown_path_parameter_gets_a_fresh_session(
    app_client: AppClient,
) -> None:
    client = await app_client()
    for parameter in BAD_PATH_PARAMETERS:
        client.session.cookie_jar.clear()
        response = await client.get("/test" + parameter, headers=JSON)
        assert response.status == 200, parameter
        assert (await response.json())["new"] is True


async def test_invalid_utf8_is_400_and_creates_nothing(
    app_client: AppClient, memcached: MemcachedProcess
) -> None:
    client = await app_client()
    before = await command_counts(memcached)
    for response in (
        await client.get("/test?dataName=%FF%FE&dataValue=x"),
        await client.post(
            "/test",
            data=b"dataName=caf%E9&dataValue=x",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        ),
        await client.post(
            "/test",
            data=b"dataName=\xff&dataValue=x",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        ),
    ):
        assert response.status == 400
        assert "not valid UTF-8" in await response.text()
        assert "Set-Cookie" not in response.headers
    assert await command_counts(memcached) == before


async def test_invalid_utf8_in_a_multipart_form_is_400(app_client: AppClient) -> None:
    client = await app_client()
    body = (
        b"--b0undary\r\n"
        b'Content-Disposition: form-data; name="dataName"\r\n'
        b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
        b"\xff\xfe\r\n"
        b"--b0undary--\r\n"
    )
    response = await client.post(
        "/test", data=body, headers={"Content-Type": "multipart/form-data; boundary=b0undary"}
    )
    assert response.status == 400
    assert "form field 'dataName' is not valid UTF-8" in await response.text()
    broken = await client.post(
        "/test", data=b"--nope", headers={"Content-Type": "multipart/form-data; boundary=x"}
    )
    assert broken.status == 400


async def test_a_multipart_form_is_read_like_an_urlencoded_one(app_client: AppClient) -> None:
    client = await app_client()
    form = aiohttp.FormData()
    form.add_field("dataName", "city")
    form.add_field("dataValue", "Zürich")
    response = await client.post("/test", data=form, headers=JSON)
    assert (await response.json())["attributes"] == {"city": "Zürich"}


async def test_a_body_over_client_max_body_size_is_413(app_client: AppClient) -> None:
    client = await app_client(client_max_body_size="64k")
    await client.post("/test", data={"dataName": "kept", "dataValue": "yes"})
    big = {"dataName": "big", "dataValue": "x" * 70_000}
    response = await client.post("/test", data=big)
    assert response.status == 413
    assert "request body is too large" in await response.text()

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit applies on read
        yield b"dataName=big&dataValue="
        for _ in range(10):
            yield b"y" * 10_000

    response = await client.post(
        "/test", data=chunks(), headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert response.status == 413
    assert (await session_of(client))["attributes"] == {"kept": "yes"}


async def test_an_over_long_name_is_413(app_client: AppClient) -> None:
    client = await app_client()
    response = await client.post("/test", data={"dataName": "n" * 5000, "dataValue": "v"})
    assert response.status == 413
    assert "dataName is too long: 5000 characters, limit 1024" in await response.text()


async def test_a_huge_header_or_url_is_a_4xx(app_client: AppClient) -> None:
    client = await app_client()
    response = await client.get("/test?dataName=" + "q" * 20_000)
    assert 400 <= response.status < 500
    response = await client.get("/test", headers={"X-Junk": "j" * 20_000})
    assert 400 <= response.status < 500


async def test_thousands_of_fields_in_one_body_are_413(app_client: AppClient) -> None:
    client = await app_client()
    body = "&".join(f"dataName{i}=v" for i in range(3000)).encode()
    response = await client.post(
        "/test", data=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert response.status == 413 and "more than 1000 fields" in await response.text()


async def test_attributes_past_the_limit_are_refused_and_the_data_kept(
    app_client: AppClient,
) -> None:
    client = await app_client(max_session_attributes=30)
    for i in range(30):
        assert (await client.get("/test", params={"dataName": f"k{i}", "dataValue": "v"})).ok
    response = await client.get("/test", params={"dataName": "one-too-many", "dataValue": "v"})
    assert response.status == 413
    assert "too many session attributes: the limit is 30" in await response.text()
    body = await session_of(client, params={"dataName": "k0", "dataValue": "replaced"})
    assert len(body["attributes"]) == 30 and body["attributes"]["k0"] == "replaced"


async def test_an_oversized_session_is_refused_and_earlier_data_stays(
    app_client: AppClient,
) -> None:
    client = await app_client(max_session_size=4096)
    await client.post("/test", data={"dataName": "first", "dataValue": "a" * 2000})
    response = await client.post("/test", data={"dataName": "second", "dataValue": "b" * 3000})
    assert response.status == 413
    assert "session too large" in await response.text()
    assert list((await session_of(client))["attributes"]) == ["first"]


async def test_odd_methods_and_paths_are_4xx(app_client: AppClient) -> None:
    client = await app_client()
    assert (await client.put("/test")).status == 405
    assert (await client.get("/logout")).status == 405
    assert (await client.get("/test/../../etc/passwd")).status == 404
    assert (await client.get("/test;jsessionid=a/b")).status == 404
