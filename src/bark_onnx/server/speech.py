"""POST /v1/audio/speech: submit to the engine, then stream or encode the audio.

The response's status waits for the first chunk of audio (so a request that
fails or times out before any audio gets a proper status); after that, pcm and
wav stream chunk by chunk, and SSE sends each chunk as an event. A request that
runs past the time limit is cancelled: a 504 before any audio, a cut stream
after. A client that goes away cancels its job, wherever it is (waiting for a
row, generating, streaming), and its batch rows are freed at the next step.
"""

from __future__ import annotations

import asyncio
import logging
import time

import numpy as np
from fastapi import Request
from fastapi.responses import Response, StreamingResponse

from ..runtime.errors import BarkOnnxError, CancelledError as JobCancelled, EngineClosedError, InputError, VoiceError
from .encoding import MEDIA_TYPES, StreamEncoder, encode_whole, sse_delta, sse_event
from .errors import CLIENT_CLOSED, ApiError, api_error
from .middleware import StreamCut
from .schemas import Plan, SpeechRequest, plan_request

logger = logging.getLogger(__name__)


class RequestTimeout(Exception):
    pass


def _submit(state, plan: Plan):
    if state.draining:  # answered as a closed engine is
        raise api_error(EngineClosedError("the server is draining"), state.settings)
    try:
        return state.tts.submit(plan.request)
    except BarkOnnxError as err:  # a full queue, a closed engine, a voice or text the model cannot take
        raise api_error(err, state.settings) from None


class SpeechRun:
    """One request's job between the engine and the response: time limit, disconnect watch, metrics."""

    def __init__(self, job, request: Request, state, started: float):
        self.job, self.state, self.started = job, state, started
        self.limit = state.settings.request_timeout
        self.deadline = started + self.limit
        self.samples = 0
        self.disconnected = False
        self._chunks = job.__aiter__()
        self._watch = asyncio.create_task(self._watch_disconnect(request.receive))

    async def _watch_disconnect(self, receive) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.disconnected = True
                self.job.cancel()
                return

    async def next(self) -> np.ndarray | None:
        """The next chunk of audio, None at the end; raises ApiError (or the job's unexpected error)."""
        remaining = self.deadline - time.perf_counter()
        try:
            if remaining <= 0:
                raise RequestTimeout
            chunk = await asyncio.wait_for(self._chunks.__anext__(), remaining)
        except StopAsyncIteration:
            return None
        except (asyncio.TimeoutError, RequestTimeout):
            self.job.cancel()
            raise ApiError(504, f"the request ran past this server's time limit ({self.limit:g} s) and was "
                                "cancelled; send a shorter input", code="timeout") from None
        except JobCancelled:
            if self.disconnected:
                raise ApiError(CLIENT_CLOSED, "the client closed the request", code="client_closed") from None
            raise ApiError(503, "the server is shutting down and cancelled this request; retry",
                           code="shutting_down") from None
        except (InputError, VoiceError) as err:  # found while generating (a pipeline's own check)
            raise api_error(err, self.state.settings) from None
        if self.samples == 0:
            self.state.metrics.first_audio.observe(time.perf_counter() - self.started)
        self.samples += len(chunk)
        return chunk

    async def collect(self) -> np.ndarray:
        pieces = []
        while (chunk := await self.next()) is not None:
            pieces.append(chunk)
        return np.concatenate(pieces) if pieces else np.zeros(0, np.float32)

    def finish(self) -> None:
        """Record a completed request's figures."""
        metrics = self.state.metrics
        took = time.perf_counter() - self.started
        audio_s = self.samples / self.state.tts.sample_rate
        metrics.duration.observe(took)
        metrics.audio_seconds.inc(audio_s)
        if audio_s > 0:
            metrics.rtf.observe(took / audio_s)

    def close(self) -> None:
        self._watch.cancel()
        self.job.cancel()  # a no-op once it is done


async def _stream(run: SpeechRun, plan: Plan, first, sample_rate: int):
    encoder = StreamEncoder(plan.format, sample_rate)
    wrap = sse_delta if plan.sse else (lambda data: data)
    try:
        start = encoder.start()
        if start:
            yield wrap(start)
        chunk = first
        while chunk is not None:
            yield wrap(encoder.chunk(chunk))
            chunk = await run.next()
        if plan.sse:
            yield sse_event({"type": "speech.audio.done"})
        run.finish()
    except Exception as err:
        if isinstance(err, ApiError) and err.status == CLIENT_CLOSED:
            return
        if not isinstance(err, ApiError):
            logger.exception("a speech stream failed")
            err = ApiError(500, "the server failed on this request; it was logged", code="internal_error")
        if plan.sse:  # SSE can say what went wrong; a raw audio stream can only stop short
            yield sse_event({"type": "error", "error": {"message": err.message, "type": err.type,
                                                        "param": None, "code": err.code}})
            return
        raise StreamCut(err.message) from None
    finally:
        run.close()


async def speech(request: Request, body: SpeechRequest) -> Response:
    """Generate audio for `input` (see SpeechRequest for the fields)."""
    started = time.perf_counter()
    state = request.app.state.bark
    plan = plan_request(body, state.settings, state.voices)
    run = SpeechRun(_submit(state, plan), request, state, started)
    sample_rate = state.tts.sample_rate
    try:
        if plan.streamed:
            first = await run.next()
            media = "text/event-stream" if plan.sse else MEDIA_TYPES[plan.format]
            return StreamingResponse(_stream(run, plan, first, sample_rate), media_type=media,
                                     headers={"Cache-Control": "no-cache"})
        audio = await run.collect()
        data = await asyncio.to_thread(encode_whole, audio, plan.format, sample_rate)
        run.finish()
        run.close()
        if plan.sse:
            return Response(sse_delta(data) + sse_event({"type": "speech.audio.done"}),
                            media_type="text/event-stream")
        return Response(data, media_type=MEDIA_TYPES[plan.format])
    except BaseException:
        run.close()
        raise
