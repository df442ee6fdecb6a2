"""Session: a mutable mapping of JSON-able attributes plus the metadata Tomcat exposes.

Change tracking is cheap on purpose: setting or deleting marks the session "touched", and so
does reading a list or dict value (it may be mutated in place). Only a touched session is
encoded and its digest compared with the stored one; an untouched one is unchanged for free.
The marks are cleared only when the current state is known to equal the stored one and no
other request is running on the session, so concurrent requests on one sticky session never
hide each other's changes.
"""

from __future__ import annotations

from collections.abc import Callable, ItemsView, Iterator, MutableMapping
from typing import TypeVar, overload

from .codec import Attributes, JsonValue, Transcoder, check_storable, digest
from .errors import SessionStoreError
from .ids import SessionId, new_session_id

_T = TypeVar("_T")

Rekey = Callable[["Session", SessionId], None]
"""Told (session, old id) when a session's id changes, by whoever holds sessions by id."""


class Session(MutableMapping[str, JsonValue]):
    __slots__ = (
        "_attributes", "_container_read", "_encoded", "_touched", "active_requests",
        "copy_missing", "created", "invalidated", "last_accessed", "last_refresh", "loaded_id",
        "max_inactive_interval", "new", "on_rotate", "persisted", "sid", "stored_attributes",
        "stored_digest", "transcoder",
    )

    def __init__(self, *, sid: SessionId, transcoder: Transcoder, created: float,
                 last_accessed: float,
                 max_inactive_interval: float, new: bool,
                 attributes: Attributes | None = None,
                 stored_attributes: bytes | None = None) -> None:
        self.sid = sid
        self.transcoder = transcoder
        self.loaded_id = sid  # id under which memcached holds the session now
        self.created = created
        self.last_accessed = last_accessed
        self.max_inactive_interval = max_inactive_interval
        self.new = new
        # memcached may hold a copy under loaded_id: it was loaded from there (a session that
        # is not new) or written there. A new session without data never is.
        self.persisted = not new
        self._attributes: Attributes = attributes if attributes is not None else {}
        # Encoded attributes as last stored in memcached (None: never stored) and their digest.
        self.stored_attributes = stored_attributes
        self.stored_digest = digest(stored_attributes) if stored_attributes is not None else None
        self.last_refresh = last_accessed  # last write or expiry refresh in memcached
        # Loaded from a `bak:` copy because the primary one was missing (non-sticky): the
        # end of the request writes it again, changed or not.
        self.copy_missing = False
        self._touched = False
        self._container_read = False
        self._encoded: bytes | None = None
        # True once invalidate() ended it (an attribute, not a property: read on every request)
        self.invalidated = False
        self.active_requests = 0  # requests between get_session and their end (sticky)
        self.on_rotate: Rekey | None = None

    # -- metadata ----------------------------------------------------------------------

    @property
    def id(self) -> str:
        return self.sid.text

    def invalidate(self) -> None:
        """End the session: it is removed locally and deleted from memcached after the request."""
        self.invalidated = True
        self._attributes = {}

    def outlived(self, lifetime: float, now: float) -> bool:
        """Older than `lifetime` seconds since it was created (max_session_lifetime; 0:
        never). A session new in this request is young by definition."""
        return lifetime > 0 and not self.new and now - self.created > lifetime

    def rotate_id(self) -> str:
        """Give the session a new id (the servlet's changeSessionId, done after a sign-in so
        that an id known before it, say one an attacker planted, is worth nothing after it):
        a new random part, the same node and route, the data kept. At the end of the request
        the session is stored under the new id and the copies under the old one are deleted;
        the response carries the new id. Returns it."""
        if self.invalidated:
            raise SessionStoreError("an invalidated session has no id to rotate")
        old = self.sid
        self.sid = new_session_id(old.node, old.route)
        if not self.persisted:
            self.loaded_id = self.sid  # nothing stored under the old id: nothing to delete
        if self.on_rotate is not None:
            self.on_rotate(self, old)
        return self.sid.text

    # -- change tracking ---------------------------------------------------------------

    @property
    def changed(self) -> bool:
        """True when the attributes differ from the stored ones (digest of their encoding)."""
        if not (self._touched or self._container_read):
            return False
        return self.stored_digest is None or digest(self.encode()) != self.stored_digest

    def may_have_changed(self) -> bool:
        return self._touched or self._container_read

    @property
    def saved(self) -> bool:
        """True when dropping this object loses nothing: memcached holds exactly its state
        under its id, or it has no data and never had any stored."""
        if self._touched or self._container_read:
            return False
        if not self.persisted:
            return not self._attributes
        return self.stored_attributes is not None and self.loaded_id == self.sid

    def encode(self) -> bytes:
        """The encoded attributes (cached until the next change) for digest and backup."""
        encoded = self._encoded
        if encoded is None or self._container_read:
            encoded = self._encoded = self.transcoder.encode(self._attributes)
        return encoded

    def mark_stored(self, encoded: bytes) -> None:
        """The backup of `encoded` succeeded: it is now the state to compare and roll back to."""
        self.stored_attributes = encoded
        self.stored_digest = digest(encoded)
        self.loaded_id = self.sid
        self.persisted = True
        self.copy_missing = False
        if encoded is self._encoded and self.active_requests == 0:
            self._touched = self._container_read = False

    def mark_unchanged(self) -> None:
        """Called right after `changed` said False: the marks are cleared, unless another
        request is still running (it may hold a list or dict it has yet to change)."""
        if self.active_requests == 0:
            self._touched = self._container_read = False

    def roll_back(self) -> None:
        """Restore the attributes last stored (empty if never stored)."""
        stored = self.stored_attributes
        self._attributes = self.transcoder.decode(stored) if stored is not None else {}
        self._encoded = stored
        self._touched = self._container_read = False

    # -- MutableMapping ----------------------------------------------------------------

    def __getitem__(self, key: str) -> JsonValue:
        value = self._attributes[key]
        if type(value) is list or type(value) is dict:
            self._container_read = True
            self._encoded = None
        return value

    def __setitem__(self, key: str, value: JsonValue) -> None:
        check_storable(key, value)
        self._attributes[key] = value
        self._touched = True
        self._encoded = None

    def __delitem__(self, key: str) -> None:
        del self._attributes[key]
        self._touched = True
        self._encoded = None

    def __iter__(self) -> Iterator[str]:
        return iter(self._attributes)

    # get() and items() without the Mapping mixins' round trip through __getitem__ per
    # attribute: a page that shows every attribute reads them all on every request.

    @overload
    def get(self, key: str, /) -> JsonValue | None: ...
    @overload
    def get(self, key: str, /, default: JsonValue | _T) -> JsonValue | _T: ...

    def get(self, key: str, /, default: object = None) -> object:
        value = self._attributes.get(key, default)
        if type(value) is list or type(value) is dict:
            self._container_read = True
            self._encoded = None
        return value

    def items(self) -> ItemsView[str, JsonValue]:
        return _Items(self)

    def __len__(self) -> int:
        return len(self._attributes)

    def __contains__(self, key: object) -> bool:
        return key in self._attributes

    def __repr__(self) -> str:
        return f"<Session {self.sid.text} new={self.new} attributes={len(self._attributes)}>"


class _Items(ItemsView[str, JsonValue]):
    """Session.items(): iterating marks the session as reading a list or dict value does
    (the caller may mutate it in place), once, up front."""

    __slots__ = ()
    _mapping: Session

    def __iter__(self) -> Iterator[tuple[str, JsonValue]]:
        session = self._mapping
        attributes = session._attributes
        for value in attributes.values():
            if type(value) is list or type(value) is dict:
                session._container_read = True
                session._encoded = None
                break
        return iter(attributes.items())
