"""uPlot is vendored, not fetched: its files match the checksums recorded when it was taken from
its release, the pages load it from the dashboard's own static folder, and the wheel ships it."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from ridecast.dashboard import pages
from ridecast.dashboard.app import STATIC

VENDOR = STATIC / "vendor" / "uplot"


def test_the_vendored_files_match_their_recorded_checksums() -> None:
    recorded = {}
    for line in (VENDOR / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split()
        recorded[name] = digest
    assert set(recorded) == {"uPlot.iife.min.js", "uPlot.min.css", "LICENSE"}
    for name, digest in recorded.items():
        assert hashlib.sha256((VENDOR / name).read_bytes()).hexdigest() == digest, name


def test_the_recorded_version_is_the_one_vendored() -> None:
    version = re.search(r"uPlot (\d+\.\d+\.\d+)", (VENDOR / "VERSION").read_text())
    banner = (VENDOR / "uPlot.iife.min.js").read_text()[:200]
    assert version is not None and f"(v{version[1]})" in banner
    assert "MIT License" in (VENDOR / "LICENSE").read_text()


def test_pages_load_scripts_and_styles_only_from_the_dashboard() -> None:
    for _path, name, _label, _title in pages.PAGES:
        html = pages.render(name)
        sources = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert sources and all(not re.match(r"^[a-z]+:", s) or s == "data:," for s in sources)
        for source in sources:
            if source.startswith("./static/"):
                assert (STATIC / source.removeprefix("./static/")).is_file(), source


def test_the_static_files_are_inside_the_package() -> None:
    package = Path(__file__).resolve().parents[2] / "src" / "ridecast"
    assert STATIC.is_relative_to(package)  # hatch packages src/ridecast whole: the wheel has them
    for name in ("common.js", "live.js", "rollouts.js", "batch.js", "drift.js", "dashboard.css"):
        assert (STATIC / name).is_file()
