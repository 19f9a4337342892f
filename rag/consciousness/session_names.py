"""Which Chroma collection holds a session's memories, and the one rule for a session name given over HTTP.

Every session's collection is `memory.s<sha256 of its name>`, with the name itself in the collection's
metadata, so two names never share one. Stores written before kept `memory.<name>` (names that were valid
collection names) or `memory.h<sha1[:20]>` (others); those are still read, but only by the session their
metadata names: the old mapping let a session called `h<sha1>` reach another's memories.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from index.chroma_compat import collection_names
from index.store import StoreError

PREFIX = "memory."
MAX_SESSION_CHARS = 128
KEY_SEPARATOR = "/"  # between an API key's session prefix and the client's session name; no client name holds it


class SessionNameError(StoreError):
    """A session name that cannot be used."""


def collection_name(session: str) -> str:
    """The collection of `session`: a hash of its name (injective in practice: 160 bits)."""
    if not session:
        raise SessionNameError("a session name cannot be empty")
    return PREFIX + "s" + hashlib.sha256(session.encode("utf-8")).hexdigest()[:40]


def legacy_name(session: str) -> str:
    """The collection name stores written before gave `session` (not injective: check its metadata)."""
    if re.fullmatch(r"[A-Za-z0-9._-]*[A-Za-z0-9]", session) and len(PREFIX + session) <= 200:
        return PREFIX + session
    return PREFIX + "h" + hashlib.sha1(session.encode("utf-8")).hexdigest()[:20]


def owner(client: Any, name: str) -> str:
    """The session a memory collection belongs to: its metadata's `session`, else the name after the prefix."""
    meta = client.get_collection(name, embedding_function=None).metadata or {}
    return str(meta.get("session", name[len(PREFIX) :]))


def find_collection(client: Any, session: str) -> str | None:
    """The name of the existing collection that holds `session`'s memories (new name first), or None."""
    names = set(collection_names(client))
    for name in dict.fromkeys((collection_name(session), legacy_name(session))):
        if name in names and owner(client, name) == session:
            return name
    return None


def new_collection_name(client: Any, session: str) -> str:
    """The name to create `session`'s collection under; an error when a collection of another session holds it
    (only a store written before could hold one, under a session named like a hash)."""
    name = collection_name(session)
    if name in collection_names(client):
        raise SessionNameError(
            f"collection {name} belongs to session {owner(client, name)!r}, not {session!r}: "
            "rename that session's memories (`shvayambhu memory` commands) or use another session name"
        )
    return name


def sessions(client: Any) -> list[str]:
    """Names of the sessions that have a memory collection in this store."""
    out = set()
    for name in collection_names(client):
        if name.startswith(PREFIX):
            out.add(owner(client, name))
    return sorted(out)


def check_session(name: str) -> str:
    """`name` stripped, if it is a session name a client may use (header, `user`, URL alike): 1-128 printable
    characters without `/` or `\\`; else SessionNameError saying so."""
    s = name.strip()
    if not s or len(s) > MAX_SESSION_CHARS or not s.isprintable() or "/" in s or "\\" in s:
        raise SessionNameError(f"session: 1-{MAX_SESSION_CHARS} printable characters without / or \\, got {s[:40]!r}")
    return s
