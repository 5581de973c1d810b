"""Voice activity detection with the Silero VAD model on onnxruntime, fully offline.

The model is the ONNX file of the ``silero-vad`` wheel (MIT). That wheel requires PyTorch, which a
job image must not carry for a 2 MB model, so a copy of its ``silero_vad.onnx`` (6.2.3) ships in
``agent_jobrunner/voice/models``; an installed ``silero_vad`` package's file is preferred when there
is one. Nothing is downloaded at run time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from agent_jobrunner.voice.audio import MODEL_SAMPLE_RATE, Pcm
from agent_jobrunner.voice.interfaces import VADEvent, VADEventType

WINDOW = 512  # samples per inference at 16 kHz (32 ms), as the model requires
CONTEXT = 64  # samples of the previous window the model sees before each one
MODEL_FILE = "silero_vad.onnx"
VENDORED_MODEL = Path(__file__).resolve().parent.parent / "models" / MODEL_FILE


def find_model() -> Path:
    """The installed ``silero_vad`` package's model if there is one, else the vendored copy.

    ``find_spec`` locates the package without importing it (its ``__init__`` imports torch).
    """
    spec = importlib.util.find_spec("silero_vad")
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        candidate = Path(location) / "data" / MODEL_FILE
        if candidate.is_file():
            return candidate
    return VENDORED_MODEL


@dataclasses.dataclass(frozen=True)
class SileroOptions:
    activation_threshold: float = 0.5  # a window is speech at or above this probability
    deactivation_threshold: float = 0.35  # while speaking, silence is below this one
    min_speech_duration: float = 0.1  # voiced audio needed to start speech
    min_silence_duration: float = 0.5  # silence needed to end it (the endpointing wait)
    prefix_padding: float = 0.3  # audio kept before the detected start
    max_speech_duration: float = 60.0  # the utterance buffer stops growing past this


class SileroModel:
    """The ONNX session; stateless itself (state lives in each stream), safe to share."""

    def __init__(self, path: Path) -> None:
        import onnxruntime  # type: ignore[import-untyped]

        options = onnxruntime.SessionOptions()
        options.inter_op_num_threads = 1
        options.intra_op_num_threads = 1
        options.log_severity_level = 3  # the model file carries unused initializers: not worth a warning
        self.path = path
        self._session: Any = onnxruntime.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._sr = np.array(MODEL_SAMPLE_RATE, dtype=np.int64)

    def run(
        self,
        windows: list[npt.NDArray[np.float32]],
        state: npt.NDArray[np.float32],
        context: npt.NDArray[np.float32],
    ) -> tuple[list[float], npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """Speech probabilities of consecutive windows; returns the new state and context."""
        probabilities: list[float] = []
        for window in windows:
            x = np.concatenate([context, window])[np.newaxis, :]
            output, state = self._session.run(None, {"input": x, "state": state, "sr": self._sr})
            probabilities.append(float(output[0][0]))
            context = window[-CONTEXT:]
        return probabilities, state, context


class SileroVAD:
    """The VAD provider: ``vad = await SileroVAD.load()``, then ``vad.stream()`` per audio stream."""

    sample_rate = MODEL_SAMPLE_RATE

    def __init__(self, model: SileroModel, options: SileroOptions | None = None) -> None:
        self.model = model
        self.options = options or SileroOptions()

    @classmethod
    async def load(cls, options: SileroOptions | None = None, model_path: Path | None = None) -> SileroVAD:
        path = model_path or find_model()
        model = await asyncio.get_running_loop().run_in_executor(None, SileroModel, path)
        return cls(model, options)

    def stream(self) -> SileroVADStream:
        return SileroVADStream(self.model, self.options)


class SileroVADStream:
    sample_rate = MODEL_SAMPLE_RATE

    def __init__(self, model: SileroModel, options: SileroOptions) -> None:
        self._model = model
        self._options = options
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._context = np.zeros(CONTEXT, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.int16)
        self._windows_done = 0
        # recent audio, for the padding before a start
        self._recent: deque[npt.NDArray[np.int16]] = deque(
            maxlen=max(1, round(options.prefix_padding * MODEL_SAMPLE_RATE / WINDOW) + 1)
        )
        self._speaking = False
        self._voiced_run = 0  # consecutive voiced windows while silent
        self._silent_run = 0  # consecutive silent windows while speaking
        self._speech_start = 0.0
        self._run_start = 0.0
        self._last_voiced_end = 0.0
        self._utterance: list[npt.NDArray[np.int16]] = []
        self._run_audio: list[npt.NDArray[np.int16]] = []

    @property
    def position(self) -> float:
        return self._windows_done * WINDOW / MODEL_SAMPLE_RATE

    @property
    def speaking(self) -> bool:
        return self._speaking

    async def push(self, pcm: Pcm) -> list[VADEvent]:
        if pcm.sample_rate != MODEL_SAMPLE_RATE:
            raise ValueError(f"the Silero VAD takes {MODEL_SAMPLE_RATE} Hz audio, got {pcm.sample_rate} Hz")
        data = np.concatenate([self._pending, pcm.samples]) if len(self._pending) else pcm.samples
        count = len(data) // WINDOW
        self._pending = data[count * WINDOW :].copy()
        if not count:
            return []
        windows = [data[i * WINDOW : (i + 1) * WINDOW].copy() for i in range(count)]
        floats = [(w.astype(np.float32) / 32768.0).astype(np.float32) for w in windows]
        loop = asyncio.get_running_loop()
        probabilities, self._state, self._context = await loop.run_in_executor(
            None, self._model.run, floats, self._state, self._context
        )
        events: list[VADEvent] = []
        for window, probability in zip(windows, probabilities, strict=True):
            event = self._step(window, probability)
            if event is not None:
                events.append(event)
        return events

    def _step(self, window: npt.NDArray[np.int16], probability: float) -> VADEvent | None:
        options = self._options
        start = self.position
        self._windows_done += 1
        end = self.position
        window_seconds = WINDOW / MODEL_SAMPLE_RATE
        event: VADEvent | None = None
        if not self._speaking:
            if probability >= options.activation_threshold:
                if self._voiced_run == 0:
                    self._run_start = start
                    self._run_audio = list(self._recent)
                self._voiced_run += 1
                self._run_audio.append(window)
                if self._voiced_run * window_seconds >= options.min_speech_duration:
                    self._speaking = True
                    self._silent_run = 0
                    self._speech_start = self._run_start
                    self._last_voiced_end = end
                    self._utterance = self._run_audio
                    self._run_audio = []
                    event = VADEvent(
                        VADEventType.START_OF_SPEECH,
                        position=end,
                        speech_start=self._speech_start,
                        speech=self._joined(self._utterance),
                    )
            else:
                self._voiced_run = 0
                self._run_audio = []
            self._recent.append(window)
            return event
        if len(self._utterance) * window_seconds < options.max_speech_duration:
            self._utterance.append(window)
        if probability < options.deactivation_threshold:
            self._silent_run += 1
        else:
            self._silent_run = 0
            self._last_voiced_end = end
        if self._silent_run * window_seconds >= options.min_silence_duration:
            self._speaking = False
            self._voiced_run = 0
            trailing = self._silent_run
            speech = self._utterance[: max(1, len(self._utterance) - trailing + 2)]
            self._utterance = []
            event = VADEvent(
                VADEventType.END_OF_SPEECH,
                position=end,
                speech_start=self._speech_start,
                speech_end=self._last_voiced_end,
                speech=self._joined(speech),
            )
        self._recent.append(window)
        return event

    @staticmethod
    def _joined(windows: list[npt.NDArray[np.int16]]) -> Pcm:
        if not windows:
            return Pcm.empty(MODEL_SAMPLE_RATE)
        return Pcm(np.concatenate(windows).astype(np.int16), MODEL_SAMPLE_RATE)

    async def aclose(self) -> None:
        self._utterance = []
        self._run_audio = []
