"""The rollout file (YAML): its schema, its validation, and the state a rollout starts in.

Every model forbids unknown fields, so a typo is an error, not a silently ignored setting. Errors
come out as one line that names the field path (``steps.1.set_weight: must be 0..100``).
Durations are stored as seconds, so ``spec.model_dump(mode="json")`` validates again unchanged:
that dump is what the state keeps and what the strategies read back.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from ridecast.errors import RolloutError
from ridecast.rollout.state import RolloutState

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
DURATION_HINT = "must be a duration like 20s, 5m, 1h, 1m30s or a number of seconds"


def parse_duration(value: Any) -> float:
    """``"20s"``, ``"5m"``, ``"1h"``, ``"1m30s"`` or a number of seconds -> seconds (> 0)."""
    if isinstance(value, bool):
        raise ValueError(DURATION_HINT)
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        try:
            seconds = float(text)
        except ValueError:
            parts = _PART.findall(text)
            if not parts or "".join(n + u for n, u in parts) != text:
                raise ValueError(DURATION_HINT) from None
            seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    else:
        raise ValueError(DURATION_HINT)
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError("must be a positive duration")
    return seconds


def _within(low: float, high: float, message: str) -> Any:
    def check(value: Any) -> Any:
        if not low <= value <= high:
            raise ValueError(message)
        return value

    return AfterValidator(check)


INF = float("inf")
Duration = Annotated[float, BeforeValidator(parse_duration)]
Percent = Annotated[int, _within(0, 100, "must be 0..100")]
Count = Annotated[int, _within(1, INF, "must be at least 1")]
Positive = Annotated[float, _within(1e-300, INF, "must be greater than 0")]
Share = Annotated[float, _within(0, 1, "must be 0..1")]
NonNegative = Annotated[float, _within(0, INF, "must be 0 or more")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ThresholdFields(_Model):
    """Optional overrides of the analysis thresholds for one analysis (``null`` = keep)."""

    min_samples: Count | None = None
    max_mae_ratio: Positive | None = None
    max_error_rate: Share | None = None
    max_p99_latency_ms: Positive | None = None
    max_mean_shift: NonNegative | None = None
    timeout: Duration | None = None


class AnalysisConfig(ThresholdFields):
    """The thresholds every analysis judges by. A ``max_*`` set to ``null`` is not judged."""

    min_samples: Count | None = 200
    max_mae_ratio: Positive | None = 1.05
    max_error_rate: Share | None = 0.01
    max_p99_latency_ms: Positive | None = 100.0
    max_mean_shift: NonNegative | None = 0.25
    timeout: Duration | None = None  # None: 3 × the analysis' duration, at least 60 s


class Analysis(ThresholdFields):
    """One analysis: how long it gathers data, and any threshold it judges differently."""

    duration: Duration = 60.0


class Pause(_Model):
    duration: Duration | None = None  # None: until resumed or promoted


class Step(_Model):
    """One canary step: exactly one of ``set_weight``, ``pause`` or ``analysis``."""

    set_weight: Percent | None = None
    pause: Pause | None = None
    analysis: Analysis | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthands(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.keys() == {"pause"}:
            value = data["pause"]
            if value is None:  # `- pause:` waits until resumed
                return {"pause": {}}
            if isinstance(value, str | int | float) and not isinstance(value, bool):
                return {"pause": {"duration": value}}  # `- pause: 30s`
        if isinstance(data, dict) and data.keys() == {"analysis"} and data["analysis"] is None:
            return {"analysis": {}}
        return data

    @model_validator(mode="after")
    def _exactly_one(self) -> Step:
        given = [k for k in ("set_weight", "pause", "analysis") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("a step is exactly one of set_weight, pause or analysis")
        return self

    @model_serializer(mode="wrap")
    def _only_its_kind(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """``{set_weight: 20}``, as written, not every field of the union."""
        return {k: v for k, v in handler(self).items() if v is not None}

    @property
    def kind(self) -> str:
        if self.set_weight is not None:
            return "set_weight"
        return "pause" if self.pause is not None else "analysis"


class BlueGreen(_Model):
    shadow_percent: Percent = 100  # share of requests copied to green during pre-promotion
    pre_promotion: Analysis = Field(default_factory=lambda: Analysis(duration=30.0))
    post_promotion: Analysis = Field(default_factory=lambda: Analysis(duration=30.0))
    scale_down_delay: Duration = 30.0  # how long blue stays loaded after the switch is final


class Shadow(_Model):
    percent: Annotated[int, _within(1, 100, "must be 1..100")] = 100
    duration: Duration = 60.0
    promote: bool = False  # promote on a passing analysis, instead of pausing for a person


class AB(_Model):
    weight: Annotated[int, _within(1, 99, "must be 1..99")] = 50  # % of riders in variant b
    alpha: Annotated[float, _within(1e-12, 1 - 1e-12, "must be between 0 and 1")] = 0.05
    tau2: Positive | None = None  # mixing variance, minutes²; None: chosen for decision_n
    decision_n: Annotated[int, _within(2, INF, "must be at least 2")] = 2000
    max_samples: Annotated[int, _within(2, INF, "must be at least 2")] | None = None
    max_duration: Duration = 3600.0
    promote_winner: bool = True


class Rolling(_Model):
    workers: Count = 2  # workers (or replicas, consumers) to move one at a time
    interval: Duration = 10.0  # least time a moved worker serves before the next one moves


def _default_steps() -> list[Step]:
    return [
        Step(set_weight=20),
        Step(analysis=Analysis(duration=60.0)),
        Step(set_weight=50),
        Step(analysis=Analysis(duration=60.0)),
    ]


class RolloutSpec(_Model):
    """A validated rollout file."""

    model: str
    candidate: str  # alias or version number
    stable: str = "champion"  # the alias the stable version is read from, and promotion moves
    strategy: Literal["canary", "blue_green", "shadow", "ab", "rolling"]
    steps: list[Step] | None = None  # canary only; None: the default steps
    analysis: AnalysisConfig = Field(default_factory=AnalysisConfig)
    blue_green: BlueGreen = Field(default_factory=BlueGreen)
    shadow: Shadow = Field(default_factory=Shadow)
    ab: AB = Field(default_factory=AB)
    rolling: Rolling = Field(default_factory=Rolling)

    @field_validator("model", "candidate", "stable", mode="before")
    @classmethod
    def _text(cls, v: Any) -> Any:
        if isinstance(v, int) and not isinstance(v, bool):
            return str(v)  # `candidate: 2` is version 2
        return v

    @field_validator("model", "candidate", "stable")
    @classmethod
    def _not_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        return v.strip()

    @model_validator(mode="after")
    def _steps(self) -> RolloutSpec:
        if self.strategy != "canary":
            if self.steps:
                raise ValueError(f"steps: only a canary takes steps (strategy is {self.strategy})")
            return self
        if self.steps is None:
            self.steps = _default_steps()
        if not self.steps:
            raise ValueError("steps: a canary needs at least one step")
        weight = 0
        for i, step in enumerate(self.steps):
            if step.set_weight is not None:
                weight = step.set_weight
            elif step.analysis is not None and weight == 0:
                raise ValueError(
                    f"steps.{i}.analysis: the candidate has no traffic here; "
                    "put a set_weight above 0 before it"
                )
        return self


# ---------------------------------------------------------------------------------- errors

_TYPE_MESSAGES = {
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be text",
    "list_type": "must be a list",
    "model_type": "must be a mapping of fields",
    "model_attributes_type": "must be a mapping of fields",
    "dict_type": "must be a mapping of fields",
}


def _model_in(annotation: Any) -> Any:
    """The pydantic model inside an annotation like ``X | None`` or ``list[X] | None``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _fields_of(loc: tuple[Any, ...]) -> list[str]:
    """The field names allowed at ``loc`` (for a did-you-mean hint)."""
    model: Any = RolloutSpec
    for part in loc:
        if isinstance(part, int) or model is None:
            continue
        info = model.model_fields.get(part)
        if info is None:
            return []
        model = _model_in(info.annotation)
    return list(model.model_fields) if model is not None else []


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _one_line(error: Any) -> str:
    loc = tuple(error["loc"])
    path = ".".join(str(p) for p in loc)
    kind = error["type"]
    if kind == "extra_forbidden":
        parent, name = loc[:-1], str(loc[-1])
        close = difflib.get_close_matches(name, _fields_of(parent), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        where = ".".join(str(p) for p in parent)
        return f"{where + ': ' if where else ''}unknown field '{name}'{hint}"
    if kind == "missing":
        return f"{path} is required"
    if kind == "literal_error":
        expected = error.get("ctx", {}).get("expected", "")
        choices = ", ".join(re.findall(r"'([^']*)'", expected)) or expected
        return f"{path}: must be one of {choices} (got {_shown(error['input'])})"
    if kind == "value_error":
        message = str(error.get("ctx", {}).get("error", error["msg"]))
        if not path and ": " in message:  # a whole-file rule that names its own field
            return message
        shown = "" if isinstance(error["input"], dict) else f" (got {_shown(error['input'])})"
        return f"{path + ': ' if path else ''}{message}{shown}"
    message = _TYPE_MESSAGES.get(kind, error["msg"])
    return f"{path + ': ' if path else ''}{message} (got {_shown(error['input'])})"


def parse_spec(text: str) -> RolloutSpec:
    """Read a rollout file's YAML text; a RolloutError names the first bad field."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "cannot be parsed"
        raise RolloutError(f"rollout file: not valid YAML{where}: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RolloutError(f"rollout file: must be a mapping of fields (got {type(data).__name__})")
    try:
        return RolloutSpec.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        # A misspelt field also shows up as a missing one: name the misspelling.
        first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
        raise RolloutError(f"rollout file: {_one_line(first)}") from None


def load_spec(path: str | Path) -> RolloutSpec:
    """Read and validate a rollout file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise RolloutError(f"rollout file: cannot read {path}: {exc.strerror or exc}") from None
    return parse_spec(text)


def spec_of(state: RolloutState) -> RolloutSpec:
    """The validated spec a state carries (the strategies read their settings from it)."""
    return RolloutSpec.model_validate(state.spec)


def initial_state(
    spec: RolloutSpec,
    *,
    rollout_id: str,
    stable_version: str,
    candidate_version: str,
    now: float,
) -> RolloutState:
    """The state a new rollout starts in: progressing, with its strategy's first step applied."""
    from ridecast.rollout.strategies import start  # strategies import this module

    state = RolloutState(
        id=rollout_id,
        model=spec.model,
        strategy=spec.strategy,
        stable_version=str(stable_version),
        candidate_version=str(candidate_version),
        phase="progressing",
        step=0,
        weight=0,
        shadow_percent=0,
        preview=True,
        step_started_at=now,
        created_at=now,
        updated_at=now,
        reason="started",
        spec=spec.model_dump(mode="json"),
        memory={},
    )
    return start(state, spec, now)
