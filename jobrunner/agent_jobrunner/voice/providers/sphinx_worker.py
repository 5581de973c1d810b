"""The PocketSphinx decoder in a process of its own (it holds the GIL while decoding).

    python -m agent_jobrunner.voice.providers.sphinx_worker

Requests on stdin, answers on stdout, each framed as one op byte, a 4-byte big-endian length
and the payload. Ops: ``L`` load (JSON list of phrases, or null), ``D`` decode a whole
utterance, ``S`` start an utterance, ``P`` push audio, ``F`` finish it. Audio is 16 kHz
16-bit mono PCM. Answers: ``O`` with the transcript (or nothing), or ``E`` with an error.
"""

from __future__ import annotations

import json
import os
import struct
import sys
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

SAMPLE_RATE = 16_000
HEADER = struct.Struct(">cI")


def read_message(stream: BinaryIO) -> tuple[bytes, bytes] | None:
    head = stream.read(HEADER.size)
    if len(head) < HEADER.size:
        return None
    op, size = HEADER.unpack(head)
    payload = stream.read(size)
    if len(payload) < size:
        return None
    return op, payload


def write_message(stream: BinaryIO, op: bytes, payload: bytes) -> None:
    stream.write(HEADER.pack(op, len(payload)) + payload)
    stream.flush()


class Worker:
    def __init__(self) -> None:
        self.decoder: Any = None

    def load(self, phrases: list[str] | None) -> None:
        from pocketsphinx import Decoder, set_loglevel  # type: ignore[import-untyped]

        from agent_jobrunner.voice.providers.pocketsphinx import build_language_model

        set_loglevel("FATAL")
        base = Decoder(samprate=SAMPLE_RATE)
        if not phrases:
            self.decoder = base
            return
        arpa = build_language_model(phrases, lambda w: base.lookup_word(w) is not None)
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "phrases.arpa"
            path.write_text(arpa)
            self.decoder = Decoder(samprate=SAMPLE_RATE, lm=str(path))

    def text(self) -> str:
        hypothesis = self.decoder.hyp()
        return str(hypothesis.hypstr) if hypothesis is not None else ""

    def handle(self, op: bytes, payload: bytes) -> str:
        if op == b"L":
            self.load(json.loads(payload))
            return ""
        if self.decoder is None:
            raise RuntimeError("no model loaded")
        if op == b"D":
            self.decoder.start_utt()
            self.decoder.process_raw(payload, False, True)
            self.decoder.end_utt()
            return self.text()
        if op == b"S":
            self.decoder.start_utt()
            return ""
        if op == b"P":
            self.decoder.process_raw(payload, False, False)
            return ""
        if op == b"F":
            self.decoder.end_utt()
            return self.text()
        raise ValueError(f"unknown op {op!r}")


def main() -> int:
    # the protocol owns the real stdout; anything the C library prints goes to stderr
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    stdin = sys.stdin.buffer
    worker = Worker()
    while (message := read_message(stdin)) is not None:
        op, payload = message
        try:
            answer = worker.handle(op, payload)
        except Exception as err:
            write_message(out, b"E", f"{type(err).__name__}: {err}".encode())
        else:
            write_message(out, b"O", answer.encode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
