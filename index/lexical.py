"""The lexical index: BM25 (bm25s + a Snowball stemmer) over the same text a collection embeds, kept in step with it.

Chroma is the source of truth. The index lives beside it in the data directory, one folder per collection
(`lexical/<name>-<collection id>/`): a `manifest.json` naming the current version folder, which holds bm25s's
arrays (`.npy`, loaded with `allow_pickle=False`), its JSON vocabulary and parameters, and `ids.json`. Writers
mark the folder `dirty` before they touch the collection and rebuild it from the collection afterwards, so a
run killed at any moment leaves a dirty or stale index that the next ingest or search rebuilds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from index.errors import ShvayambhuError
from index.lock import StoreBusy, locked_file, store_write_lock
from index.progress import progress_bar
from index.store import StoreError

log = logging.getLogger(__name__)

FORMAT = 2
LANGUAGE = "english"
STOPWORDS = "en"
PAGE = 10_000  # documents fetched from Chroma per request during a rebuild
MANIFEST, DIRTY, IDS, VOCAB = "manifest.json", "dirty", "ids.json", "vocab.tokens.json"
LOCK = ".lock"
TOKENS, OFFSETS = "tokens.npy", "offsets.npy"  # every document's token ids, flat, and where each one starts


class LexicalError(StoreError):
    """The lexical index cannot be built or stored (e.g. its folder cannot be written)."""


def lexical_dir(data_dir: Path | str, collection: Any) -> Path:
    """Where a collection's lexical index lives: keyed by name and Chroma's id, so a recreated collection starts
    afresh and an embedded store and a server's collection of the same name never share one."""
    return Path(data_dir) / "lexical" / f"{collection.name}-{collection.id}"


def ids_digest(ids: list[str]) -> str:
    """Order-free fingerprint of a set of ids."""
    h = hashlib.sha256()
    for i in sorted(ids):
        h.update(i.encode())
        h.update(b"\n")
    return h.hexdigest()


def _stemmer() -> Any:
    import Stemmer  # lazy: PyStemmer is only needed when a lexical index is built or searched

    return Stemmer.Stemmer(LANGUAGE)


def _bm25s() -> Any:
    """bm25s, imported on first use (heavy; not needed for dense-only use), with its debug lines silenced: it sets
    its own logger to DEBUG, which any root handler (e.g. after a library's `logging.warning`) then prints."""
    import bm25s

    logging.getLogger("bm25s").setLevel(logging.WARNING)
    return bm25s


def tokenize(texts: list[str], stemmer: Any, as_ids: bool) -> Any:
    """bm25s tokenisation: lower case, words of 2+ characters, English stop words out, stemmed."""
    bm25s = _bm25s()
    return bm25s.tokenize(texts, stopwords=STOPWORDS, stemmer=stemmer, return_ids=as_ids, show_progress=False)


@dataclass
class LexicalIndex:
    """A BM25 index over `ids` (row i of the index is ids[i]); `bm25` is None when there are no documents.

    The documents' token ids are kept too, so an ingest updates the index without re-reading or re-tokenising
    the documents it did not change."""

    ids: list[str]
    bm25: Any = None
    digest: str = ""
    stemmer: Any = field(default=None, repr=False)
    tokens: list[list[int]] = field(default_factory=list, repr=False)
    vocab: dict[str, int] = field(default_factory=dict, repr=False)

    @classmethod
    def build(cls, ids: list[str], texts: list[str]) -> LexicalIndex:
        """Tokenise and index `texts` (aligned with `ids`)."""
        return cls._indexed(list(ids), [], {}, texts, _stemmer())

    @classmethod
    def _indexed(
        cls, ids: list[str], tokens: list[list[int]], vocab: dict[str, int], new_texts: list[str], stemmer: Any
    ) -> LexicalIndex:
        """`tokens` (for the first ids) plus `new_texts` tokenised into `vocab` (extended), then BM25-indexed."""
        bm25s = _bm25s()

        tokens, vocab = list(tokens), dict(vocab)
        for words in tokenize(new_texts, stemmer, as_ids=False) if new_texts else []:
            tokens.append([vocab.setdefault(w, len(vocab)) for w in words])
        bm25 = None
        if ids:
            vocab.setdefault("", len(vocab))  # bm25s's placeholder for an empty document
            bm25 = bm25s.BM25()
            bm25.index(bm25s.tokenization.Tokenized(ids=tokens, vocab=vocab), show_progress=False)
        return cls(ids, bm25, ids_digest(ids), stemmer, tokens, vocab)

    def updated(self, removed: set[str], added: list[tuple[str, str]]) -> LexicalIndex:
        """A new index without the `removed` ids and with the `added` (id, text) pairs; the others keep their
        tokens (document frequencies, and so every score, are recomputed)."""
        keep = [r for r, i in enumerate(self.ids) if i not in removed]
        kept = {self.ids[r] for r in keep}
        new = list({i: t for i, t in added if i not in kept}.items())
        ids = [self.ids[r] for r in keep] + [i for i, _ in new]
        return self._indexed(ids, [self.tokens[r] for r in keep], self.vocab, [t for _, t in new], self.stemmer)

    def __len__(self) -> int:
        return len(self.ids)

    def search(self, text: str, n: int, allowed: set[str] | None = None) -> list[tuple[str, float]]:
        """Up to n (id, BM25 score) pairs with a positive score, best first; `allowed` restricts the ids."""
        if self.bm25 is None or n <= 0:
            return []
        tokens = [t for t in tokenize([text], self.stemmer, as_ids=False)[0] if t in self.bm25.vocab_dict]
        if not tokens:  # only stop words or words no document has: nothing matches
            return []
        mask = None
        if allowed is not None:
            mask = np.fromiter((i in allowed for i in self.ids), dtype=np.float32, count=len(self.ids))
        scores = np.asarray(self.bm25.get_scores(tokens, weight_mask=mask))
        hits = np.flatnonzero(scores > 0)
        if len(hits) > n:
            hits = hits[np.argpartition(-scores[hits], n - 1)[:n]]
        order = hits[np.lexsort((hits, -scores[hits]))]  # score, then row: a stable order for equal scores
        return [(self.ids[r], float(scores[r])) for r in order]

    def save(self, root: Path) -> None:
        """Write a new version folder, switch the manifest to it atomically, then clear `dirty` and old versions;
        all under the folder's exclusive lock, so a reader never sees a version removed under it."""
        version = uuid.uuid4().hex
        try:
            root.mkdir(parents=True, exist_ok=True)
            with locked_file(root / LOCK, exclusive=True):
                target = root / version
                target.mkdir()
                if self.bm25 is not None:
                    self.bm25.save(str(target), show_progress=False)
                (target / IDS).write_text(json.dumps(self.ids), encoding="utf-8")
                (target / VOCAB).write_text(json.dumps(self.vocab, ensure_ascii=False), encoding="utf-8")
                flat = np.fromiter((t for row in self.tokens for t in row), dtype=np.int32)
                np.save(target / TOKENS, flat, allow_pickle=False)
                offsets = np.cumsum([0] + [len(r) for r in self.tokens], dtype=np.int64)
                np.save(target / OFFSETS, offsets, allow_pickle=False)
                manifest = {"format": FORMAT, "version": version, "count": len(self.ids), "digest": self.digest}
                _atomic_write(root / MANIFEST, json.dumps(manifest))
                (root / DIRTY).unlink(missing_ok=True)
                for old in root.iterdir():
                    if old.is_dir() and old.name != version:
                        shutil.rmtree(old, ignore_errors=True)
        except OSError as e:
            raise LexicalError(
                f"cannot write the lexical index under {root}: {e}. Check the folder's permissions "
                "and free space; dense search still works (--mode dense)."
            ) from e

    @classmethod
    def load(cls, root: Path) -> tuple[LexicalIndex, dict[str, Any]] | None:
        """The stored index and its manifest, or None when missing, unreadable or of another format."""
        bm25s = _bm25s()

        try:
            with locked_file(root / LOCK, exclusive=False):  # a save elsewhere never removes the version being read
                manifest = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
                if manifest.get("format") != FORMAT:
                    return None
                folder = root / manifest["version"]
                ids = json.loads((folder / IDS).read_text(encoding="utf-8"))
                vocab = json.loads((folder / VOCAB).read_text(encoding="utf-8"))
                flat = np.load(folder / TOKENS, allow_pickle=False)
                offsets = np.load(folder / OFFSETS, allow_pickle=False)
                tokens = [flat[a:b].tolist() for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
                bm25 = None
                if ids:
                    bm25 = bm25s.BM25.load(str(folder), allow_pickle=False, show_progress=False)
                if len(ids) != manifest["count"] or len(tokens) != len(ids):
                    return None
                if bm25 is not None and bm25.scores["num_docs"] != len(ids):
                    return None
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return cls(ids, bm25, manifest.get("digest", ""), _stemmer(), tokens, vocab), manifest


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def collection_ids(collection: Any) -> list[str]:
    """Every id in a collection, fetched in pages (works for embedded and server stores)."""
    ids: list[str] = []
    total = collection.count()
    for offset in range(0, total, PAGE):
        ids.extend(collection.get(include=[], limit=PAGE, offset=offset)["ids"])
    return ids


def rebuild(collection: Any, *, show_progress: bool = False) -> LexicalIndex:
    """Build the index from the documents stored in `collection` (the texts that were embedded)."""
    total = collection.count()
    ids: list[str] = []
    texts: list[str] = []
    with progress_bar(show_progress) as bar:
        task = bar.add_task(f"lexical index of {collection.name!r}", total=total)
        for offset in range(0, total, PAGE):
            got = collection.get(include=["documents"], limit=PAGE, offset=offset)
            ids.extend(got["ids"])
            texts.extend(d or "" for d in got["documents"])
            bar.advance(task, len(got["ids"]))
    return LexicalIndex.build(ids, texts)


STALE_NOTE = "the keyword index is being rebuilt: these hits come from dense search alone"


class LexicalStore:
    """A collection's lexical index on disk, loaded once per process.

    Writers, holding the store's write lock, update or rebuild it inline (`update`, `index`, `sync`). A search
    never does: `current` gives None while the index is stale, and a background thread rebuilds it under the
    write lock meanwhile."""

    def __init__(self, root: Path | str, show_progress: bool = False):
        self.root = Path(root)
        self.show_progress = show_progress
        self._index: LexicalIndex | None = None
        self._version: str | None = None
        self._unsaved: LexicalIndex | None = None  # rebuilt but not saved (a full disk, a read-only store)
        self._mutex = threading.RLock()  # the cached index: held briefly, never during a rebuild
        self._building = threading.RLock()  # one rebuild or update at a time when a server's threads share it
        self._rebuilder: threading.Thread | None = None
        self.missed = False  # whether the last `current` found the index stale

    @classmethod
    def for_collection(cls, data_dir: Path | str, collection: Any, show_progress: bool = False) -> LexicalStore:
        """The store for `collection` under `data_dir` (see `lexical_dir`)."""
        return cls(lexical_dir(data_dir, collection), show_progress)

    def mark_dirty(self) -> None:
        """Say that the collection is about to change: until the next `sync`, the index counts as stale."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            (self.root / DIRTY).touch()
        except OSError as e:
            raise LexicalError(f"cannot write the lexical index under {self.root}: {e}") from e

    def _manifest(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.root / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def _saved(self, count: int) -> LexicalIndex | None:
        """The saved index (reloaded when another process saved a new version) if it is clean and holds `count`
        ids, else None. Reads only."""
        with self._mutex:
            manifest = self._manifest()
            if manifest is None or (self.root / DIRTY).exists():
                return None
            if self._index is None or self._version != manifest.get("version"):
                loaded = LexicalIndex.load(self.root)
                if loaded is None:
                    return None
                self._index, self._version = loaded[0], loaded[1]["version"]
            return self._index if len(self._index) == count else None

    def current(self, collection: Any, count: int | None = None) -> LexicalIndex | None:
        """For a search: the index in step with `collection` (`count` is the collection's, when the caller has
        it), or None when it is missing, dirty, unreadable or holds another number of ids; then a rebuild starts
        in the background (`rebuild_in_background`) and the caller searches the dense side meanwhile. Never
        writes."""
        n = collection.count() if count is None else count
        idx = self._saved(n)
        if idx is None:
            with self._mutex:
                unsaved = self._unsaved
            if unsaved is not None and len(unsaved) == n:
                idx = unsaved
        if idx is None:
            if not self.missed:  # once while it stays stale, not at every search
                log.warning(
                    "the keyword index of %r is stale: rebuilding it in the background; searching by dense only "
                    "meanwhile",
                    collection.name,
                )
            self.rebuild_in_background(collection)
        self.missed = idx is None
        return idx

    def rebuild_in_background(self, collection: Any) -> None:
        """Bring the index up to date in a thread that holds the store's write lock, unless one is at it already.
        When another writer holds the lock, the thread gives up: that writer or the next search sees to it."""
        with self._mutex:
            if self._rebuilder is not None and self._rebuilder.is_alive():
                return
            self._rebuilder = threading.Thread(
                target=self._rebuild, args=(collection,), name=f"keyword index {collection.name}"
            )  # not a daemon: a one-shot command finishes the rebuild before it exits
            self._rebuilder.start()
            _rebuilders[:] = [t for t in _rebuilders if t.is_alive()] + [self._rebuilder]

    def _rebuild(self, collection: Any) -> None:
        held = False
        try:
            try:
                with store_write_lock(collection, "keyword index rebuild", wait=False):
                    held = True
                    self.index(collection)
            except StoreBusy:
                log.info("keyword index of %r: another writer holds the store; rebuilt later", collection.name)
            except (ShvayambhuError, OSError):
                if held:
                    raise
                with self._building:  # no write lock to be had (a read-only store, a full disk): in memory alone
                    idx = rebuild(collection)
                with self._mutex:
                    self._unsaved = idx
        except Exception as e:  # a background thread has no caller to tell: the log does
            log.warning("cannot rebuild the keyword index %s (%s); searches stay dense only", self.root, e)

    def wait_rebuilt(self, timeout: float | None = None) -> bool:
        """Wait for a background rebuild to end; False if it still runs after `timeout` seconds."""
        t = self._rebuilder
        if t is not None:
            t.join(timeout)
            return not t.is_alive()
        return True

    def index(self, collection: Any, *, verify: bool = False, count: int | None = None) -> LexicalIndex:
        """For a writer holding the store's write lock: the index in step with `collection`, rebuilt and saved
        when missing, dirty or holding another number of ids (`verify` also compares every id; `count` is the
        collection's, when the caller already has it)."""
        with self._building:
            n = collection.count() if count is None else count
            idx = self._saved(n)
            if idx is None:
                return self._rebuild_and_save(collection)
            if verify and idx.digest != ids_digest(collection_ids(collection)):
                return self.sync(collection)
            return idx

    def update(self, collection: Any, removed: set[str], added: list[tuple[str, str]]) -> LexicalIndex:
        """After a writer changed the collection by exactly these records: update the stored index (when it was
        in step before) and keep it only if it now holds exactly the collection's ids; else rebuild."""
        with self._building:
            loaded = LexicalIndex.load(self.root) if self._manifest() is not None else None
            if loaded is not None:
                idx = loaded[0].updated(removed, added)
            else:  # no index yet: enough when the collection holds just these records (a first ingest)
                idx = LexicalIndex.build([i for i, _ in added], [t for _, t in added])
            if idx.digest != ids_digest(collection_ids(collection)):
                return self.sync(collection)
            idx.save(self.root)
            self._keep(idx)
            return idx

    def _rebuild_and_save(self, collection: Any) -> LexicalIndex:
        """`sync`, except that an index that cannot be saved (a full disk) is kept in memory for searches (while
        the collection's count matches) instead of failing."""
        idx = rebuild(collection, show_progress=self.show_progress)
        try:
            idx.save(self.root)
        except LexicalError:
            with self._mutex:
                self._unsaved = idx
            return idx
        self._keep(idx)
        return idx

    def _keep(self, idx: LexicalIndex) -> None:
        with self._mutex:
            self._index, self._version, self._unsaved = idx, (self._manifest() or {}).get("version"), None

    def sync(self, collection: Any) -> LexicalIndex:
        """Rebuild from the collection and save; clears `dirty`."""
        with self._building:
            idx = rebuild(collection, show_progress=self.show_progress)
            idx.save(self.root)
            self._keep(idx)
            return idx


_rebuilders: list[threading.Thread] = []  # background rebuilds started by this process


def wait_for_rebuilds(timeout: float = 60.0) -> None:
    """Wait for this process's background rebuilds of keyword indexes to end (before its stores close)."""
    while _rebuilders:
        _rebuilders.pop().join(timeout)
