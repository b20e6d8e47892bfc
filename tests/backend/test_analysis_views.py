"""A route's cut of a cached answer is made once and kept beside it (AnalysisService.view)."""

from __future__ import annotations

import json
from pathlib import Path

from backend.analysis_cache import AnalysisService, Ready


def test_a_view_is_made_once_per_name_and_kept_in_memory(tmp_path: Path) -> None:
    service = AnalysisService(tmp_path, workers=1, scrub=lambda text: text)
    try:
        key = service.key("timeline", {"run": 1})
        answer = {"epochs": list(range(1000)), "galleries": {"0": [1, 2, 3]}}
        outcome = service.get(key, lambda progress: answer, wait_s=30.0)
        assert isinstance(outcome, Ready)
        made: list[str] = []

        def without_galleries(body: bytes) -> bytes:
            made.append("without")
            cut = json.loads(body)
            cut.pop("galleries")
            return json.dumps(cut).encode()

        first = service.view(key, "without-galleries", outcome.body, without_galleries)
        again = service.view(key, "without-galleries", outcome.body, without_galleries)
        assert first == again and json.loads(first) == {"epochs": list(range(1000))}
        assert made == ["without"]  # the second request cut nothing
        # Another name is another view; the answer itself is untouched.
        other = service.view(key, "epochs-only", outcome.body, lambda b: b"[]")
        assert other == b"[]" and json.loads(outcome.body) == answer
    finally:
        service.shutdown()
