"""Cut a stream of text (LLM deltas) into sentences, so speech can start after the first one."""

from __future__ import annotations

import re

# a sentence ends at . ! ? (with closing quotes/brackets) followed by space, or at a line break;
# the lookahead wants whitespace, so a decimal point ("3.5") never ends one
_END = re.compile(r"""[.!?…]+["')\]]*(?=\s)|\n+""")
_ABBREVIATIONS = frozenset(
    {"mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e", "no", "approx", "inc"}
)


class SentenceStream:
    """Push text as it comes; take whole sentences out.

    Sentences shorter than ``min_chars`` are joined with the next one, so TTS is not fed
    fragments like "Hi." on their own (the first one excepted: it is the one latency waits on).
    """

    def __init__(self, min_chars: int = 20, first_min_chars: int = 8) -> None:
        self.min_chars = min_chars
        self.first_min_chars = first_min_chars
        self._buffer = ""
        self._held = ""
        self._emitted = 0

    def push(self, text: str) -> list[str]:
        self._buffer += text
        out: list[str] = []
        start = 0
        for match in _END.finditer(self._buffer):
            end = match.end()
            candidate = self._buffer[start:end]
            if _is_abbreviation(candidate):
                continue
            sentence = self._take(candidate)
            start = end
            if sentence:
                out.append(sentence)
        self._buffer = self._buffer[start:]
        return out

    def flush(self) -> list[str]:
        """The rest, at the end of the text."""
        rest = (self._held + " " + self._buffer).strip()
        self._held = self._buffer = ""
        if rest:
            self._emitted += 1
            return [_clean(rest)]
        return []

    def _take(self, piece: str) -> str:
        text = (self._held + " " + piece).strip() if self._held else piece.strip()
        minimum = self.first_min_chars if self._emitted == 0 else self.min_chars
        if len(text) < minimum:
            self._held = text
            return ""
        self._held = ""
        self._emitted += 1
        return _clean(text)


def split_sentences(text: str) -> list[str]:
    stream = SentenceStream(min_chars=0, first_min_chars=0)
    return stream.push(text) + stream.flush()


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _is_abbreviation(candidate: str) -> bool:
    words = candidate.strip().split()
    if not words or not candidate.rstrip().endswith("."):
        return False
    last = words[-1].rstrip(".").lower()
    return last in _ABBREVIATIONS or (len(last) == 1 and last.isalpha() and len(words) > 1)
