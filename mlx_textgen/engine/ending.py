"""How requests end early on the MLX thread: aborted, timed out, refused, or failed.

A mix-in of EngineLoop: these methods share its sequence tables and batch generator.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from mlx_textgen.engine.request import FinishReason, RequestOutput
from mlx_textgen.engine.sequence import Sequence

log = logging.getLogger("mlx_textgen.engine")


class RequestEnding:
    """Abort, timeout, rejection and failure of requests, for EngineLoop."""

    _by_id: dict[str, Sequence]
    _by_uid: dict[int, Sequence]
    _waiting: Any
    _prefill: Any
    _solo: Any
    _loaded: Any
    _trace: Any
    options: Any

    def _send(self, outputs: list[RequestOutput]) -> None:  # EngineLoop's
        raise NotImplementedError

    def _reject(self, request_id: str, message: str, status: int) -> None:
        """End a request that never started (nothing of it is held)."""
        out = RequestOutput(request_id, finish_reason=FinishReason.ERROR, error=message)
        out.error_status = status
        self._send([out])

    def _abort(self, request_id: str) -> None:
        for i, req in enumerate(self._waiting):
            if req.request_id == request_id:
                del self._waiting[i]
                return
        seq = self._by_id.get(request_id)
        if seq is not None:
            self._release(seq)
            self._send([seq.finish(FinishReason.ABORT)])

    def _expire(self) -> None:
        timeout = self.options.request_timeout
        if not timeout:
            return
        now = time.monotonic()
        for seq in [s for s in self._by_id.values() if now - s.request.arrival_time > timeout]:
            self._release(seq)
            self._send([seq.finish(FinishReason.ERROR, f"request timed out after {timeout:g}s", 504)])

    def _release(self, seq: Sequence) -> None:
        """Free a sequence's memory now: out of the decode batch or its prefill job."""
        if self._solo is not None and self._solo[1] is seq:
            self._solo = None
        if seq.uid is not None and self._loaded is not None:
            self._loaded.generator.remove([seq.uid])
        for job in list(self._prefill):
            if job.drop(seq.request_id):
                self._prefill.remove(job)
        self._forget(seq)

    def _forget(self, seq: Sequence) -> None:
        if seq.guide is not None:
            seq.guide.close()
        if self._by_id.pop(seq.request_id, None) is not None:
            req = seq.request
            self._trace.request(req.request_id, req.arrival_time, seq.first_token_time, seq.num_generated)
        if seq.uid is not None:
            self._by_uid.pop(seq.uid, None)

    def _fail_requests(self, request_ids: list[str], exc: Exception) -> None:
        """End these requests with an error (their set-up failed); the rest run on."""
        log.error("request set-up failed for %s", ", ".join(request_ids), exc_info=exc)
        for rid in request_ids:
            seq = self._by_id.get(rid)
            if seq is not None:
                self._release(seq)
                self._send([seq.finish(FinishReason.ERROR, f"internal error: {exc}")])
            else:
                self._send([RequestOutput(rid, finish_reason=FinishReason.ERROR, error=str(exc))])

    def _fail_all(self, message: str) -> None:
        for seq in list(self._by_id.values()):
            self._forget(seq)
            self._send([seq.finish(FinishReason.ERROR, message)])
        self._prefill.clear()
        self._solo = None
        if self._loaded is not None:
            self._loaded.generator = self._loaded.new_generator()
