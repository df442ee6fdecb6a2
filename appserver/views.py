"""The session demo routes: /test (and /test.jsp), /login and /logout.

What a request may carry is parsed before the session is touched, so garbage input is
refused without creating or loading a session.
"""

from __future__ import annotations

import binascii
import ipaddress
import logging
import re
from functools import lru_cache

from aiohttp import BodyPartReader, MultipartReader, StreamReader, hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.multipart import (
    BadContentDispositionHeader,
    BadContentDispositionParam,
    parse_content_disposition,
)

from netnames import address_text
from sessionstore import Session, encode_url, get_session, url_parameter
from sessionstore.client_address import TrustedProxies

from .errors import (
    BadFormError,
    BodyUnreadableError,
    ClientGoneError,
    InputTooLargeError,
    RequestError,
    UnsupportedMediaTypeError,
)
from .forms import (
    MAX_FIELDS,
    Fields,
    apply_entry,
    check_transfer_encoding,
    data_entry,
    decode_text,
    parse_urlencoded,
    quoted,
    text_charset,
    username_entry,
)
from .logs import client_text
from .pages import DemoPage, SessionView
from .settings import AppServerSettings


def session_parameter_route(cookie_name: str) -> str:
    """The route suffix of a `;jsessionid=ID` path parameter (the cookie name in lower case)
    after a path (cookies disabled); sessionstore reads the id from it."""
    return "{jsid:" + re.escape(url_parameter(cookie_name)) + "[^/?]*}"

_FORM = "application/x-www-form-urlencoded"
_MULTIPART = "multipart/form-data"
_HTML = "text/html"
_JSON = "application/json"
_FORM_TYPES = f"a form body is {_FORM} or {_MULTIPART}"
# The content codings aiohttp's HTTP parser undoes (br and zstd need their libraries, else
# it fails the body with a ContentEncodingError); any other would reach us still encoded.
_CONTENT_CODINGS = frozenset({"", "identity", "gzip", "deflate", "br", "zstd"})

logger = logging.getLogger("appserver.requests")


def error_response(request: web.BaseRequest, error: RequestError) -> web.Response:
    """The one place a request error becomes HTTP: its status and its message as text, and
    one log line, since the access log (when on) has the status but never the reason."""
    logger.log(
        error.log_level, "%s from %s: %d %s", error.log_label, request.remote, error.status, error
    )
    response = web.Response(status=error.status, text=f"{error}\n")
    if error.close_connection:
        response.force_close()
    return response


def local_address(request: web.BaseRequest, fallback: str) -> str:
    """IP:PORT this request came in on (Tomcat's getLocalAddr() + getLocalPort())."""
    transport = request.transport
    sockname = transport.get_extra_info("sockname") if transport is not None else None
    if not sockname:
        return fallback
    return _address(sockname[0], sockname[1])


def fixed_local_address(host: str, port: int) -> str | None:
    """The one address every request comes in on, when listening on one IP and a fixed port
    (no per-request getsockname); None when it depends on the connection."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None  # a name may resolve to several addresses
    if ip.is_unspecified or port == 0:
        return None
    return _address(host, port)


# Per request when the server listens on a wildcard address: remembered.
_address = lru_cache(maxsize=64)(address_text)


async def read_form(request: web.Request, limit: int) -> Fields:
    """The body's fields for an urlencoded or multipart POST (none without a body).

    Every way a body can be wrong ends as a RequestError: aiohttp's multipart reader says
    "malformed" with ValueError, HttpProcessingError (part headers) and, as errors, the
    BadContentDisposition warnings (logs.configure_logging); its HTTP parser fails a body
    whose chunk framing or content coding is broken with RequestPayloadError.
    """
    if not request.body_exists:
        return ()
    length = request.content_length
    if length is not None and length > limit:
        raise InputTooLargeError(
            f"request body is too large: {length} bytes, limit {limit} (client_max_body_size)"
        )
    charset = _form_charset(request)
    try:
        if request.content_type == _FORM:
            return parse_urlencoded(await request.read(), where="form body", charset=charset)
        return await _multipart_fields(request, limit)
    except web.HTTPRequestEntityTooLarge:
        raise _too_large(limit) from None
    except web.RequestPayloadError as exc:
        # Mark the body ended: else aiohttp's lingering close, which reads what is left of
        # it after our answer, meets the parser's error again and logs it with a traceback.
        request.content.feed_eof()
        raise BodyUnreadableError(
            f"request body cannot be read: {_reason(exc.__cause__ or exc)}"
        ) from None
    except (BadContentDispositionHeader, BadContentDispositionParam) as exc:
        raise _not_multipart(f"malformed Content-Disposition {_reason(exc)}") from None
    except (HttpProcessingError, ValueError) as exc:
        raise _not_multipart(_reason(exc)) from None
    except OSError:
        # Reading the body does no I/O of its own: an OSError here is the one that
        # connection_lost() left on the body, so the peer closed or reset the connection.
        raise ClientGoneError("the client went away while sending the request body") from None


def _form_charset(request: web.Request) -> str:
    """The charset the body is declared in; UnsupportedMediaTypeError for a body that is no
    form we read (media type, charset or content coding)."""
    if hdrs.CONTENT_TYPE not in request.headers:
        raise UnsupportedMediaTypeError(f"a request body needs a Content-Type: {_FORM_TYPES}")
    if request.content_type not in (_FORM, _MULTIPART):
        raise UnsupportedMediaTypeError(
            f"unsupported media type {quoted(request.content_type)}: {_FORM_TYPES}"
        )
    coding = request.headers.get(hdrs.CONTENT_ENCODING, "").lower()
    if coding not in _CONTENT_CODINGS:
        raise UnsupportedMediaTypeError(f"unsupported Content-Encoding {quoted(coding)}")
    declared = request.charset
    return "utf-8" if declared is None else text_charset(declared, where="the Content-Type")


async def _multipart_fields(request: web.Request, limit: int) -> list[tuple[str, str]]:
    reader = await request.multipart()
    fields: list[tuple[str, str]] = []
    parts = 0
    while (part := await _next_part(reader)) is not None:
        parts += 1
        if parts > MAX_FIELDS:
            raise InputTooLargeError(f"form body has more than {MAX_FIELDS} fields")
        field = await _read_part(part, request.content, limit)
        if field is not None:
            fields.append(field)
    return fields


async def _next_part(reader: MultipartReader) -> BodyPartReader | None:
    try:
        part = await reader.next()
    except RuntimeError as exc:
        # aiohttp's one RuntimeError here: a _charset_ part longer than any charset name.
        raise _not_multipart(_reason(exc)) from None
    if isinstance(part, MultipartReader):
        raise _not_multipart("a part is multipart itself")
    return part


async def _read_part(
    part: BodyPartReader, body: StreamReader, limit: int
) -> tuple[str, str] | None:
    """(name, text) of one part, read to its end; None for a part that is no text parameter
    (a file or binary content: request.post() would give bytes, getParameter nothing)."""
    name = _part_name(part)
    where = f"form field {quoted(name)}"
    check_transfer_encoding(part.headers.get(hdrs.CONTENT_TRANSFER_ENCODING), where=where)
    content_type = part.headers.get(hdrs.CONTENT_TYPE, "text/plain").lower()
    is_text = not part.filename and content_type.startswith("text/")
    charset = text_charset(part.get_charset("utf-8"), where=where) if is_text else None
    raw = bytearray()
    while chunk := await part.read_chunk():
        if body.total_bytes > limit:  # a chunked body: no Content-Length said so up front
            raise _too_large(limit)
        if charset is not None:
            raw.extend(chunk)
    if charset is None:
        return None
    try:
        data = bytes(part.decode(raw))  # undoes Content-Transfer-Encoding
    except binascii.Error:
        raise BadFormError(f"{where} is not valid base64") from None
    return name, decode_text(data, charset, where=where)


def _part_name(part: BodyPartReader) -> str:
    """The name RFC 7578 requires of every part, in a form-data Content-Disposition."""
    disposition, _ = parse_content_disposition(part.headers.get(hdrs.CONTENT_DISPOSITION))
    name = part.name
    if disposition != "form-data" or not name:
        raise _not_multipart("a part has no 'Content-Disposition: form-data' with a name")
    try:
        name.encode("utf-8")  # header bytes that are not UTF-8 arrive as lone surrogates
    except UnicodeEncodeError:
        raise BadFormError(f"form field name {quoted(name)} is not valid UTF-8") from None
    return name


def _not_multipart(reason: str) -> BadFormError:
    return BadFormError(f"form body is not valid multipart/form-data: {reason}")


def _too_large(limit: int) -> InputTooLargeError:
    return InputTooLargeError(
        f"request body is too large: over {limit} bytes (client_max_body_size)"
    )


def _reason(exc: BaseException) -> str:
    """What aiohttp said, as one printable line of bounded length."""
    text = exc.message if isinstance(exc, HttpProcessingError) else str(exc)
    lines = text.strip().splitlines()
    return quoted(lines[0]) if lines else type(exc).__name__


class SessionPages:
    """Handlers for one server; `page` holds the pre-rendered, server-wide parts."""

    def __init__(self, *, settings: AppServerSettings, page: DemoPage) -> None:
        self._settings = settings
        self._page = page
        self._fallback_address = settings.listen
        self._fixed_address = fixed_local_address(settings.listen_host, settings.listen_port)
        self._trusted = TrustedProxies(settings.session.trusted_networks)

    async def test(self, request: web.Request) -> web.Response:
        settings = self._settings
        raw_query = request.rel_url.raw_query_string
        post = request.method == "POST"
        entry = None  # a GET without a query string (most of them) has nothing to parse
        if raw_query or post:
            try:
                query = parse_urlencoded(raw_query, where="query string") if raw_query else ()
                body = await read_form(request, settings.client_max_body_size) if post else ()
                entry = data_entry(query, body,
                                   max_name_length=settings.max_attribute_name_length)
            except RequestError as exc:
                return error_response(request, exc)
        session = await get_session(request)
        if entry is not None:
            try:
                apply_entry(session, entry, max_attributes=settings.max_session_attributes)
            except RequestError as exc:
                return error_response(request, exc)
        view = self._view(request, session)
        if _JSON in request.headers.get("Accept", ""):
            return web.Response(text=self._page.json(view), content_type=_JSON)
        html = self._page.html(view, self._client(request))
        return web.Response(text=html, content_type=_HTML)

    async def login(self, request: web.Request) -> web.Response:
        """Sign in: the session gets a new id first (so an id known before, say one an
        attacker planted, is worth nothing now), then holds `user`; back to /test."""
        settings = self._settings
        try:
            raw_query = request.rel_url.raw_query_string
            query = parse_urlencoded(raw_query, where="query string") if raw_query else ()
            body = await read_form(request, settings.client_max_body_size)
            entry = username_entry(query, body)
        except RequestError as exc:
            return error_response(request, exc)
        session = await get_session(request)
        session.rotate_id()
        try:
            apply_entry(session, entry, max_attributes=settings.max_session_attributes)
        except RequestError as exc:
            return error_response(request, exc)
        # encode_url: a client without cookies follows the redirect with its new id.
        return web.Response(status=303, headers={"Location": encode_url(request, "/test")})

    async def logout(self, request: web.Request) -> web.Response:
        """Invalidate the session (gone locally and from memcached), then back to /test."""
        session = await get_session(request)
        session.invalidate()
        return web.Response(status=303, headers={"Location": "/test"})

    def _view(self, request: web.Request, session: Session) -> SessionView:
        action_url = encode_url(request, "/test")
        # encode_url only ever appends ";<cookie name>=ID": reuse that suffix for the others
        suffix = action_url[5:]
        user = session.get("user")
        return SessionView(
            self._fixed_address or local_address(request, self._fallback_address),
            session.id,
            session.new,
            session.created,
            session.last_accessed,
            session.max_inactive_interval,
            session.items(),
            action_url,
            "/logout" + suffix,
            login_url="/login" + suffix,
            user=user if isinstance(user, str) else None,
        )

    def _client(self, request: web.Request) -> str:
        """Who asked: the peer, or the client a trusted proxy names (X-Real-IP, else the
        last X-Forwarded-For), as the access log says."""
        headers = request.headers
        forwarded = tuple(headers.getall("X-Forwarded-For", ()))
        address = client_text(
            self._trusted, request.remote, headers.get("X-Real-IP"), forwarded
        )
        return address or "unknown"
