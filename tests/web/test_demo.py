"""The web demo step runs on the trained registry, hot-reloads, and leaves the alias as it was."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from ridecast.demo import DemoContext
from ridecast.registry import ModelRef


@pytest.mark.timeout(120)
def test_demo_step(trained, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from ridecast.web.demo import demo_step

    out = io.StringIO()
    settings = trained.settings.model_copy(
        update={"prediction_log_url": f"sqlite:///{tmp_path / 'demo.db'}"}
    )
    ctx = DemoContext(Console(file=out, width=160), settings, trained.registry)
    demo_step(ctx)
    text = out.getvalue()
    assert "POST /invocations" in text and "/v2/models/ride-cost/infer" in text
    assert ctx.results["web"]["hot_reload_to"] == "2"
    assert "responses now from v2" in text and "422" in text
    assert trained.registry.resolve(ModelRef("ride-duration", "champion")) == "1"
