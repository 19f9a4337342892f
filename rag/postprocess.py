"""Cleaning a generated answer: leaked role tags and separators, repeated sentences and lines, a dangling
fragment at a length cut, and source citations renumbered in order of first use.

`Cleaner` works on a stream: it releases a sentence or line only once the text after it shows that it is
complete, and every decision depends only on the text before, so any chunking of the same text gives the
same output. `clean(text)` is the one-shot form, `Cleaner().feed(text) + Cleaner.finish()`. The answer's
first words come sooner: when it opens with HEAD_WORDS plain words (letters, digits, `'`, `,`, `-`; nothing a
role label, our markup, a special token, a citation or a fence could start with), they are released as soon as
the next word begins, and the rest of that sentence follows as one segment (`_open`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# A sentence ends at a terminator (with closing quotes/brackets, leaked special tokens) and spaces; a line at
# a newline.
_SENTENCE_END = re.compile(r"[.!?…][\"'”’)\]]*(?:<\|[A-Za-z0-9_]{1,32}\|>|</?s>)*[ \t]+|[ \t]*\n")
_SPACES = re.compile(r"[ \t]+")
_TERMINATED = re.compile(r"[.!?…:;][\"'”’)\]*_`]*$|```\s*$")
MAX_SEGMENT = 400  # characters without a sentence end after which a segment may break at a space

# A hallucinated next turn: everything from here on is dropped.
_TURN_START = re.compile(r"^\s*(?:#{1,6}\s*)?(?:\*\*)?(?:user|human|system|instruction|q)(?:\*\*)?\s*:", re.I)
_TURN_TOKEN = re.compile(
    r"<\|im_start\|>\s*(?:user|system)|<\|start_header_id\|>\s*(?:user|system)|<\|(?:user|system)\|>"
    r"|\[INST\]|<<SYS>>|#{2,}\s*(?:instruction|human|user)\b|<start_of_turn>\s*user",
    re.I,
)
# Special tokens and separators that leak from chat templates and byte models: removed wherever they are.
_LEAKED = re.compile(
    r"<\|start_header_id\|>\s*assistant\s*<\|end_header_id\|>|<\|im_start\|>\s*assistant|<start_of_turn>\s*model"
    r"|<\|[A-Za-z0-9_]{1,32}\|>|</?s>|\[/INST\]|<</SYS>>|<(?:SEP|sep|EOS|eos|BOS|bos|pad|PAD|eot|EOT)>"
    r"|<end_of_turn>|[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffd]"
)
# Our own prompt markup (rag.consciousness.prompt): the reference block and its exemplar/memory/reflection blocks.
_MARKUP = re.compile(r"<\s*(/?)\s*(reference|exemplar|memory|reflection)\b[^<>\n]{0,80}>", re.I)
# A memory as the prompt shows it (rag.consciousness.memory.exchange_text, prompt.memory_text): a reproduced one.
_MEMORY_ECHO = re.compile(r"^\s*(?:\(\s*(?:just now|\d+ \w+ ago)\s*\)\s*)?(?:the user said|i answered)\s*:", re.I)
# The zero-width space rag.backends.ollama.as_text puts into special-token spellings, should a model echo one.
_BROKEN = re.compile("(?<=[<|\\[\uff5c])\u200b")
# A role label at the very start of the answer.
_LEADING_ROLE = re.compile(r"^\s*(?:\*\*)?(?:assistant|ai|answer|a|response|bot|shvayambhu)(?:\*\*)?\s*:\s*", re.I)
_SEPARATOR_LINE = re.compile(r"^\s*(?:#{3,}|={3,}|-{3,}\s*end\b.*|<{3,}|>{3,}|\|{3,})\s*$", re.I)
_CITATION = re.compile(r"([ \t]*)\[(?:(?:source|exemplar|ref|doc)\s*)?(\d{1,3}(?:\s*,\s*\d{1,3})*)\]", re.I)
_NORM = re.compile(r"[^\w]+")
MIN_REPEAT = 20  # normalised characters a sentence needs before a non-adjacent repeat is dropped
# The answer's opening words, released before its first sentence ends: plain words, each followed by spaces.
HEAD_WORDS = 2  # at least; more while they could still be a multi-word label below followed by a colon
MAX_HEAD_WORDS = 8
_PLAIN_WORD = re.compile(r"[^\W_](?:[^\W_]|['’,-])*[ \t]+(?=\S)")
_LABELS = (("the", "user", "said"), ("i", "answered"))  # _MEMORY_ECHO's; _LEADING_ROLE's are single words


def _norm(text: str) -> str:
    return _NORM.sub(" ", text.lower()).strip()


@dataclass
class Cleaner:
    """Streaming cleaner. `feed` returns text that is final; `finish` returns the rest.

    `n_sources`: how many numbered exemplars the prompt showed; citations [k] to them are renumbered in order
    of first use (see `used`), citations to numbers that were never shown are removed.
    """

    n_sources: int = 0
    name: str = ""
    _buf: str = ""
    _sep: str = ""  # whitespace owed before the next emitted segment
    _emitted: bool = False
    _stopped: bool = False
    _fence: bool = False
    _skip: str = ""  # inside a reproduced block of our markup: its kind, until it closes
    _seen: set[str] = field(default_factory=set)
    _last: str = ""
    used: list[int] = field(default_factory=list)  # original source numbers, in order of first citation
    text: str = ""  # everything released so far
    _head: bool = False  # the segment the buffer holds ends at the opening words, not at a sentence end
    _open: str = ""  # the opening words released: the rest of their sentence comes next

    def feed(self, chunk: str) -> str:
        """Add generated text; return the newly released cleaned text (possibly empty)."""
        if self._stopped:
            return ""
        self._buf += chunk
        out = []
        while not self._stopped:
            cut = self._boundary(final=False)
            if cut is None:
                break
            seg, self._buf = self._buf[:cut], self._buf[cut:]
            out.append(self._segment(seg))
        return self._release("".join(out))

    def finish(self, done_reason: str = "stop") -> str:
        """Flush the last segment. At a length cut an unfinished last sentence is dropped, not shown."""
        out = []
        while self._buf and not self._stopped:
            cut = self._boundary(final=True)
            seg, self._buf = (self._buf, "") if cut is None else (self._buf[:cut], self._buf[cut:])
            if not self._buf and done_reason == "length" and self._emitted and not self._fence and not self._open:
                body = _LEAKED.sub("", seg).rstrip()
                if body and not _TERMINATED.search(body):
                    break  # the dangling fragment
            out.append(self._segment(seg))
        if self._fence and self._emitted:
            out.append("\n```")
            self._fence = False
        self._buf = ""
        return self._release("".join(out))

    # -- internals --------------------------------------------------------------------------------------
    def _release(self, text: str) -> str:
        self.text += text
        return text

    def _boundary(self, final: bool) -> int | None:
        """End of the first complete segment in the buffer, or None when more text is needed."""
        buf = self._buf
        if self._fence:
            i = buf.find("\n")
            return i + 1 if i >= 0 else (len(buf) if final and buf else None)
        if not self._emitted and not self._open and not self._skip:
            head = self._opening_words(buf, final)
            if head is None:
                return None  # the opening words may still be released alone: wait for the next one
            if head:
                self._head = True
                return head
        m = _SENTENCE_END.search(buf)
        forced = _SPACES.search(buf, MAX_SEGMENT) if len(buf) > MAX_SEGMENT else None
        if forced is not None and (m is None or forced.start() < m.start()):
            m = forced
        if m is None:
            return len(buf) if final and buf else None
        if m.group().endswith("\n") or m.end() < len(buf) or final:
            return m.end()
        return None  # spaces at the end of the buffer: the sentence may go on

    def _opening_words(self, buf: str, final: bool) -> int | None:
        """Where the answer's opening words end (their spaces included), 0 when it does not open with plain
        words, None when the text so far cannot tell yet. Depends only on the text, never on its chunking."""
        at, words = len(buf) - len(buf.lstrip(" \t")), []
        while len(words) < MAX_HEAD_WORDS:
            m = _PLAIN_WORD.match(buf, at)
            if m is None:
                rest = buf[at:]
                plain = _PLAIN_WORD.match(rest + " x")  # the word (and its spaces) may still be arriving
                return None if plain is not None and plain.end() >= len(rest) + 1 and not final else 0
            at = m.end()
            words.append(_norm(m.group()))
            name = tuple(_norm(self.name).split())
            if len(words) >= HEAD_WORDS and not any(
                tuple(words) == label[: len(words)] for label in (*_LABELS, name) if label
            ):
                return at
        return 0

    def _segment(self, seg: str) -> str:
        """Clean one complete segment (content and trailing whitespace); return what it adds to the output."""
        stripped = seg.rstrip(" \t\n")
        trailer = seg[len(stripped) :]
        if self._head:  # plain opening words: nothing in them to clean or drop
            self._head = False
            self._open = stripped.lstrip(" \t")
            return self._emit(self._open, trailer, verbatim=False)
        if self._open:  # the rest of the opening sentence: the checks of a segment's start were made on its head
            return self._close_opening(stripped, trailer)
        if self._fence:
            content = stripped
            if content.lstrip().startswith("```"):
                self._fence = False
            return self._emit(content, trailer, verbatim=True)
        stripped = self._unquote(_BROKEN.sub("", stripped))
        m = _TURN_TOKEN.search(stripped)
        if m:
            stripped, self._stopped = stripped[: m.start()], True
        content = _LEAKED.sub("", stripped)
        if not self._emitted:
            content = _LEADING_ROLE.sub("", content).lstrip()
            if self.name:
                content = re.sub(rf"^\s*{re.escape(self.name)}\s*:\s*", "", content, flags=re.I)
        if _TURN_START.match(content) or _MEMORY_ECHO.match(content):
            if self._emitted:  # the model goes on to write the user's next turn
                self._stopped = True
                return ""
            content = ""  # it opened by echoing the question: drop that line, keep what follows
        if not content.strip() or _SEPARATOR_LINE.match(content):
            self._sep += trailer
            return ""
        key = _norm(content)
        if key and (key == self._last or (len(key) >= MIN_REPEAT and key in self._seen)):
            self._sep += trailer
            return ""
        self._last = key
        self._seen.add(key)
        if content.lstrip().startswith("```"):
            self._fence = True
        content = _CITATION.sub(self._cite, content)
        return self._emit(content, trailer, verbatim=False)

    def _close_opening(self, stripped: str, trailer: str) -> str:
        """The rest of the sentence whose opening words are out: cleaned as its whole would have been."""
        head, self._open = self._open, ""
        stripped = self._unquote(_BROKEN.sub("", stripped))
        m = _TURN_TOKEN.search(stripped)
        if m:
            stripped, self._stopped = stripped[: m.start()], True
        content = _LEAKED.sub("", stripped)
        key = _norm(head + " " + content)
        self._last = key
        self._seen.add(key)
        if not content.strip():
            self._sep += trailer
            return ""
        return self._emit(_CITATION.sub(self._cite, content), trailer, verbatim=True)

    def _unquote(self, text: str) -> str:
        """`text` without our prompt markup. A block the answer opens with (the model reproducing its reference
        material) is skipped to its end; any other tag of ours, or a closing one, means the rest is reproduced
        prompt: the answer stops there, without the quoted text before a closing tag."""
        out = ""
        while text and not self._stopped:
            if self._skip:
                end = re.search(rf"<\s*/\s*{self._skip}\s*>", text, re.I)
                if end is None:
                    return out
                text, self._skip = text[end.end() :], ""
                continue
            m = _MARKUP.search(text)
            if m is None:
                return out + text
            before = text[: m.start()]
            if not m.group(1) and not self._emitted and not (out + before).strip():
                self._skip, text = m.group(2).lower(), text[m.end() :]
                continue
            self._stopped = True
            return out + (before if not m.group(1) else "")
        return out

    def _emit(self, content: str, trailer: str, verbatim: bool) -> str:
        sep = ""
        if self._emitted:
            sep = self._sep if verbatim else _join(self._sep)
        self._sep = trailer
        self._emitted = True
        return sep + content

    def _cite(self, m: re.Match[str]) -> str:
        if not self.n_sources:
            return m.group()
        nums = []
        for part in m.group(2).split(","):
            n = int(part)
            if not 1 <= n <= self.n_sources:
                continue
            if n not in self.used:
                self.used.append(n)
            new = self.used.index(n) + 1
            if new not in nums:
                nums.append(new)
        return m.group(1) + "[" + ", ".join(map(str, nums)) + "]" if nums else ""


def _join(ws: str) -> str:
    """The separator owed between two segments: up to one blank line, else one space."""
    n = ws.count("\n")
    return "\n" * min(n, 2) if n else (" " if ws else "")


def clean(text: str, *, done_reason: str = "stop", n_sources: int = 0, name: str = "") -> tuple[str, list[int]]:
    """One-shot cleaning: (clean text, original numbers of the cited sources in their new order)."""
    c = Cleaner(n_sources=n_sources, name=name)
    c.feed(text)
    c.finish(done_reason)
    return c.text, c.used


_WORD = re.compile(r"\w+")


def overlap(answer: str, source: str, n: int = 3) -> float:
    """Share of the answer's word n-grams that also occur in `source` (0 when the answer is too short)."""
    a = [w.lower() for w in _WORD.findall(answer)]
    s = [w.lower() for w in _WORD.findall(source)]
    grams = {tuple(a[i : i + n]) for i in range(len(a) - n + 1)}
    if not grams:
        return 0.0
    src = {tuple(s[i : i + n]) for i in range(len(s) - n + 1)}
    return len(grams & src) / len(grams)


def attribute(answer: str, sources: list[str], cited: list[int], threshold: float = 0.12) -> list[int]:
    """Source numbers (1-based, in the prompt's order) the answer used: its citations first, then those it
    visibly copied from (word-trigram overlap at least `threshold`), best overlap first."""
    used = list(cited)
    scored = [(overlap(answer, s), i + 1) for i, s in enumerate(sources) if i + 1 not in used]
    used += [i for score, i in sorted(scored, key=lambda t: -t[0]) if score >= threshold]
    return used
