"""``ridecast rollout …``: start, watch and steer rollouts from the shell.

Like ``kubectl argo rollouts``, the commands work on the shared state store directly (the
database ``RIDECAST_STATE_URL`` names; by default the prediction log's database under
``RIDECAST_HOME``) and on the registry, with the same settings as the servers. They need no server
URL and no token. Heavy modules are imported inside the commands, so ``--help`` is quick.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

if TYPE_CHECKING:
    from ridecast.rollout.state import RolloutState
    from ridecast.rollout.strategies import Decision

EXAMPLE = """\
model: ride-duration     # a registered model
candidate: challenger    # alias or version; stable is @champion
strategy: canary         # canary|blue_green|shadow|ab|rolling
steps:
  - set_weight: 20
  - analysis: {duration: 20s}
  - set_weight: 50
  - analysis: {duration: 20s}
analysis:
  min_samples: 200       # rides with feedback, per version
  max_mae_ratio: 1.05    # candidate MAE / stable MAE
  max_error_rate: 0.01
  max_p99_latency_ms: 100"""

rollout_app = typer.Typer(
    help="Roll a new model version out: canary, blue/green, shadow, A/B or rolling. The commands "
    "work on the shared rollout state (env RIDECAST_STATE_URL, default the prediction log's "
    "database under RIDECAST_HOME) and need no server.\n\nA rollout file (see docs/rollout.md "
    "for every field):\n\n"
    + "\n".join(f"    {line}" for line in EXAMPLE.splitlines())
    + "\n\nThen: `ridecast rollout start "
    "canary.yaml`, `ridecast rollout status`, and `promote`, `abort`, `pause` or `resume` by hand.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)
console = Console() if sys.stdout.isatty() else Console(width=160)

ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="Model name (e.g. ride-duration) or rollout id. \\[default: the one active rollout]",
        show_default=False,
    ),
]
JsonOption = Annotated[
    bool,
    typer.Option(
        "--json",
        help="Print JSON for scripts: phase, strategy, step {index, count, spec}, weights "
        "{version: percent}, shadow_percent, stable_version, candidate_version, analysis "
        "[{verdict, reason, figures}], reason, lease, updated_at.",
    ),
]


def register(app: typer.Typer) -> None:
    app.add_typer(rollout_app, name="rollout")


def _settings() -> Any:
    from ridecast.settings import get_settings

    return get_settings()


def _when(ts: float | None) -> str:
    if not ts:
        return ""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _weights(state: RolloutState | dict[str, Any]) -> str:
    live = state["weights"] if isinstance(state, dict) else state.weights
    shadow = state["shadow_percent"] if isinstance(state, dict) else state.shadow_percent
    text = " · ".join(f"v{v} {p}%" for v, p in live.items())
    return f"{text}{f' · shadow {shadow}%' if shadow else ''}"


_SECONDS = ("duration", "timeout", "interval", "max_duration", "scale_down_delay")


def _flow(value: Any, key: str = "") -> str:
    """A step as the rollout file would say it: ``analysis: {duration: 20s}``."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_flow(v, k)}" for k, v in value.items()) + "}"
    if key in _SECONDS and isinstance(value, int | float):
        return f"{value:g}s"
    return str(value)


def _step_text(step: dict[str, Any]) -> str:
    """Steps are counted from 0, as the reasons say them."""
    if not step["count"]:
        return str(step["index"])
    if step["index"] >= step["count"] or not step["spec"]:
        return f"all {step['count']} steps done"
    shown = ", ".join(f"{k}: {_flow(v, k)}" for k, v in step["spec"].items())
    return f"{step['index']} of 0..{step['count'] - 1}: {shown}"


def _said(state: RolloutState) -> None:
    console.print(
        f"{state.id}: {state.phase}, {state.strategy} of {state.model} "
        f"v{state.stable_version} → v{state.candidate_version}; {_weights(state)}",
        highlight=False,
    )
    if state.reason:
        console.print(f"  {state.reason}", highlight=False)


def _checks(figures: dict[str, Any]) -> str:
    """The judged figures of one verdict, compactly: ``mae_ratio 0.93 (≤ 1.05)``."""
    shown = []
    for check in figures.get("checks") or []:
        value, limit = check.get("value"), check.get("threshold")
        if value is None or not isinstance(value, int | float):
            continue
        bound = f" (≤ {limit:.4g})" if isinstance(limit, int | float) else ""
        shown.append(f"{check.get('figure')} {value:.4g}{bound}")
    return ", ".join(shown) or "-"


def _dump(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


START_HELP = (
    "Validate a rollout file against the registry and the state store, then start it. Nothing "
    "changes when the file, the model or the candidate is wrong, or the model already has an "
    "active rollout.\n\nExample file (canary.yaml):\n\n"
    + "\n".join(f"    {line}" for line in EXAMPLE.splitlines())
    + "\n\nThen: `ridecast rollout start canary.yaml`."
)


@rollout_app.command("start", help=START_HELP)
def start(
    file: Annotated[
        Path, typer.Argument(help="The rollout file (YAML); see `ridecast rollout --help`.")
    ],
) -> None:
    from ridecast.control import ops

    _said(ops.start(_settings(), file))


@rollout_app.command("status")
def status(model: ModelOption = None, as_json: JsonOption = False) -> None:
    """Where a rollout stands: phase, step, weights, the last analysis verdicts and who drives it.

    Without --model: the one active rollout, else the latest one.
    """
    from rich.table import Table

    from ridecast.control import ops

    info = ops.status(_settings(), model)
    if as_json:
        _dump(info)
        return
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    lease = info["lease"]
    rows = [
        ("rollout", info["id"]),
        ("model", info["model"]),
        ("strategy", info["strategy"]),
        ("phase", info["phase"]),
        ("versions", f"stable v{info['stable_version']}, candidate v{info['candidate_version']}"),
        ("step", _step_text(info["step"])),
        ("weights", _weights(info)),
        ("preview", "on" if info["preview"] else "off"),
        ("reason", info["reason"]),
        (
            "controller",
            f"{lease['holder']}{'' if lease['live'] else ' (expired)'}" if lease else "none yet",
        ),
        ("updated", _when(info["updated_at"])),
    ]
    for key, value in rows:
        table.add_row(key, str(value))
    console.print(table, highlight=False)
    if info["analysis"]:
        verdicts = Table("when", "step", "verdict", "figures", "reason", title="last verdicts")
        for row in info["analysis"]:
            verdicts.add_row(
                _when(row["at"]),
                str(row["step"]),
                row["verdict"],
                _checks(row["figures"]),
                row["reason"],
            )
        console.print(verdicts, highlight=False)


@rollout_app.command("promote")
def promote(
    model: ModelOption = None,
    reason: Annotated[
        str | None, typer.Option("--reason", help="Why (kept in the history).")
    ] = None,
) -> None:
    """Promote now: move @champion to the candidate, then send it all traffic."""
    from ridecast.control import ops

    _said(ops.promote(_settings(), model, reason=reason))


@rollout_app.command("abort")
def abort(
    model: ModelOption = None,
    reason: Annotated[
        str | None, typer.Option("--reason", help="Why (kept in the history).")
    ] = None,
) -> None:
    """Abort: all traffic back to the stable version; @champion stays where it is."""
    from ridecast.control import ops

    _said(ops.abort(_settings(), model, reason=reason))


@rollout_app.command("pause")
def pause(model: ModelOption = None) -> None:
    """Hold the rollout at its current weights until `ridecast rollout resume`."""
    from ridecast.control import ops

    _said(ops.pause(_settings(), model))


@rollout_app.command("resume")
def resume(model: ModelOption = None) -> None:
    """Go on after a pause (a hand pause, or a `pause` step without a duration)."""
    from ridecast.control import ops

    _said(ops.resume(_settings(), model))


@rollout_app.command("history")
def history(model: ModelOption = None, as_json: JsonOption = False) -> None:
    """Every transition of a rollout: when, who, phase, step, weight and why."""
    from rich.table import Table

    from ridecast.control import ops

    rows = ops.history(_settings(), model)
    if as_json:
        _dump(rows)
        return
    table = Table("when", "actor", "phase", "step", "weight", "shadow", "reason")
    for row in rows:
        table.add_row(
            _when(row["ts"]),
            row["actor"],
            row["phase"],
            str(row["step"]),
            f"{row['weight']}%",
            f"{row['shadow_percent']}%",
            row["reason"],
        )
    console.print(table, highlight=False)


@rollout_app.command("run")
def run(
    interval: Annotated[
        float, typer.Option("--interval", min=0.05, help="Seconds between ticks.")
    ] = 1.0,
) -> None:
    """Run the controller in the foreground until Ctrl-C (for setups with no `ridecast serve`).

    It competes for the same lease as the servers' controllers, so running it next to them is
    safe: exactly one of them advances the steps.
    """
    from ridecast.control.controller import Controller
    from ridecast.control.store import store_for
    from ridecast.registry import Registry

    settings = _settings()
    store = store_for(settings)

    def said(before: RolloutState, after: RolloutState, decision: Decision) -> None:
        console.print(f"[{time.strftime('%H:%M:%S')}] {after.id}", highlight=False)
        _said(after)

    controller = Controller(settings, Registry(settings), store, interval=interval, on_change=said)
    console.print(
        f"rollout controller {controller.holder} on {store.safe_url}; Ctrl-C stops it",
        highlight=False,
    )
    try:
        controller.run_forever()
    except KeyboardInterrupt:
        console.print("stopped; the lease is released")
