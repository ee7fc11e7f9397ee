"""The HTML of the four pages: one shell (navigation, status line, the page's container) and the
page's own script, which polls its JSON and draws it. Every URL is relative, so the same pages
work under the web service's ``/dashboard/`` and on their own."""

from __future__ import annotations

from html import escape

# (path below the dashboard, page name, navigation label, title)
PAGES: tuple[tuple[str, str, str, str], ...] = (
    ("", "live", "Live service", "Live service, by model version"),
    ("rollouts", "rollouts", "Rollouts", "Rollouts"),
    ("batch", "batch", "Batch results", "Batch results, per month and version"),
    ("drift", "drift", "Drift", "Drift against the model's reference month"),
)

_SHELL = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · ridecast</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{root}static/vendor/uplot/uPlot.min.css">
<link rel="stylesheet" href="{root}static/dashboard.css">
</head>
<body data-page="{page}">
<header>
  <a class="brand" href="{root}">ridecast</a>
  <nav>{nav}</nav>
  <span id="status" class="status" role="status">loading…</span>
</header>
<main>
  <h1>{title}</h1>
  <div id="controls" class="controls"></div>
  <div id="page"></div>
</main>
<script src="{root}static/vendor/uplot/uPlot.iife.min.js"></script>
<script src="{root}static/common.js"></script>
<script src="{root}static/{page}.js"></script>
</body>
</html>
"""


def render(page: str) -> str:
    """The page ``page``. Pages sit directly below the dashboard's root (``/dashboard/``,
    ``/dashboard/rollouts``), so ``./`` is that root for every one of them."""
    root = "./"
    links = []
    title = ""
    for path, name, label, heading in PAGES:
        current = ' aria-current="page"' if name == page else ""
        links.append(f'<a href="{root}{path}"{current}>{escape(label)}</a>')
        if name == page:
            title = heading
    return _SHELL.format(title=escape(title), root=root, page=page, nav="".join(links))
