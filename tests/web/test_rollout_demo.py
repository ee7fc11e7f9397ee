"""The demo's rollout step: a short canary from v1 to v2 under simulated riders, on a private copy
of the trained registry (the canary moves its champion alias)."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from rich.console import Console

from ridecast.demo import DemoContext

from ..conftest import Trained
from ..control import private_home


@pytest.mark.timeout(240)
def test_the_demo_canary_prints_each_step_with_the_step_its_reason_names(
    trained: Trained, tmp_path: Path
) -> None:
    from ridecast.web.rollout_demo import demo_step

    with private_home(trained, tmp_path / "home") as home:
        out = io.StringIO()
        settings = home.settings.model_copy(update={"data_dir": trained.data_dir})
        ctx = DemoContext(Console(file=out, width=200), settings, home.registry)
        demo_step(ctx)
        text = out.getvalue()
        assert ctx.results["rollout"] == {"phase": "promoted", "champion": "2"}, text
        assert home.champion() == "2"
    assert " 0 failed requests" in text
    lines = [line for line in text.splitlines() if re.match(r"\s+step \d+ ", line)]
    assert len(lines) >= 3, text  # started, an analysis passed, the last passed: promoted
    for line in lines:
        shown = int(re.match(r"\s+step (\d+) ", line).group(1))  # type: ignore[union-attr]
        named = re.search(r"step (\d+): ", line[line.index("%") :])
        if named is not None:  # the transition's reason names the step it finished
            assert shown == int(named.group(1)), line
