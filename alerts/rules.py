"""The rules file: alert rules, the notification policy (route tree, receivers, inhibition),
Alertmanager targets and the retraining launcher. `load_rules` names the line of each mistake."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from driftline.alerts.durations import parse_duration
from driftline.alerts.labels import Matcher, MatcherError, parse_matcher
from driftline.evaluators.config import ExperimentSettings
from driftline.ingest import tables as ingest_tables

Duration = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]
_NAME = r"^[a-zA-Z_][a-zA-Z0-9_]*$"
# The reasons the detectors flag a call for (driftline.detectors.flags).
FLAG_REASONS = (
    "error", "empty", "refusal", "low_relevance", "novel", "truncated", "latency", "tokens", "cost",
)  # fmt: skip
METRICS = tuple(ingest_tables.CALL_METRICS)
CALL_DIMENSIONS = tuple(ingest_tables.CALL_DIMENSIONS)


class RulesError(ValueError):
    """A rules file that cannot be used; each line of the message is `file:line: problem`."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def _matchers(value: Any) -> list[Matcher]:
    if not isinstance(value, list):
        raise ValueError('matchers must be a list such as [severity="critical"]')
    try:
        return [v if isinstance(v, Matcher) else parse_matcher(str(v)) for v in value]
    except MatcherError as exc:
        raise ValueError(str(exc)) from None


Matchers = Annotated[list[Matcher], BeforeValidator(_matchers)]


# -- conditions --------------------------------------------------------------------------------


class _Threshold(_Strict):
    above: float | None = None
    below: float | None = None

    @model_validator(mode="after")
    def _one_bound(self) -> _Threshold:
        if (self.above is None) == (self.below is None):
            raise ValueError("give exactly one of above or below")
        return self

    def breached(self, value: float) -> bool:
        return value > self.above if self.above is not None else value < (self.below or 0.0)


class DriftCondition(_Strict):
    """The reference's latest windows drifted `consecutive` times in a row."""

    consecutive: int = Field(1, ge=1)
    reference: str | None = None


class FlagsCondition(_Strict):
    """Calls flagged for `reason` over the last `over`: a share of calls, or a count."""

    reason: str
    over: Duration = 900.0
    rate_above: float | None = Field(None, ge=0, le=1)
    at_least: int | None = Field(None, ge=1)
    reference: str | None = None

    @field_validator("reason")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in FLAG_REASONS:
            raise ValueError(f"unknown reason {value!r}; one of {', '.join(FLAG_REASONS)}")
        return value

    @model_validator(mode="after")
    def _one_bound(self) -> FlagsCondition:
        if (self.rate_above is None) == (self.at_least is None):
            raise ValueError("give exactly one of rate_above or at_least")
        return self


class MetricCondition(_Threshold):
    """A call metric per `by` group over the last `over`, with at least `min_calls` calls."""

    metric: str
    over: Duration = 300.0
    by: list[str] = Field(default_factory=lambda: ["service", "model"])
    min_calls: int = Field(20, ge=1)

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        if value not in METRICS:
            raise ValueError(f"unknown metric {value!r}; one of {', '.join(METRICS)}")
        return value

    @field_validator("by")
    @classmethod
    def _known_dimensions(cls, value: list[str]) -> list[str]:
        for name in value:
            if name not in CALL_DIMENSIONS:
                raise ValueError(f"cannot group by {name!r}; one of {', '.join(CALL_DIMENSIONS)}")
        return value


class FeedbackCondition(_Strict):
    """At least `at_least` reviewers' feedback rows (and the apps', with `app_feedback`) arrived
    since this rule last started a retraining job."""

    at_least: int = Field(ge=1)
    names: list[str] | None = None
    app_feedback: bool = False


class ModelCondition(_Strict):
    """A model version entered `status` within the last `over` (the fine-tune registry):
    announce a promotion, a gate rejection or a rollback."""

    status: Literal["promoted", "rejected", "rolled_back"] = "promoted"
    over: Duration = 3600.0


class JudgeCondition(_Strict):
    """An online judge's agreement with the reviewers fell below the bar on a criterion:
    Spearman under `min_spearman` with at least `min_audited` audited calls within `over`, per
    project and judge version (evaluators/agreement.py)."""

    evaluator: str = Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")
    min_spearman: float = Field(0.8, ge=-1, le=1)
    min_audited: int = Field(30, ge=2)
    over: Duration = 30 * 86400.0


class ExperimentCondition(ExperimentSettings):
    """A candidate of a live A/B experiment (sdk.choose_version) reached `verdict` against its
    baseline (evaluators/experiments.py, compared as `[experiments]` settings say): announce it.
    The online judges people trust (at `min_spearman` on `min_audited` audited calls) count
    beside errors, latency and cost."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    verdict: Literal["wins", "loses"] = "loses"
    experiment: str | None = None
    min_spearman: float = Field(0.8, ge=-1, le=1)
    min_audited: int = Field(30, ge=2)
    checks: list[str] = Field(
        default_factory=list, description="built-in evaluators compared too (NAME@VERSION)"
    )


Condition = (
    DriftCondition | FlagsCondition | MetricCondition | FeedbackCondition | ModelCondition
    | JudgeCondition | ExperimentCondition
)  # fmt: skip


class When(_Strict):
    drift: DriftCondition | None = None
    flags: FlagsCondition | None = None
    metric: MetricCondition | None = None
    feedback: FeedbackCondition | None = None
    model: ModelCondition | None = None
    judge: JudgeCondition | None = None
    experiment: ExperimentCondition | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> When:
        given = [name for name in type(self).model_fields if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one condition: drift, flags, metric, feedback, model, judge or "
                "experiment"
            )
        return self

    @property
    def condition(self) -> Condition:
        found = (
            self.drift or self.flags or self.metric or self.feedback or self.model or self.judge
            or self.experiment
        )  # fmt: skip
        assert found is not None
        return found


class Retrain(_Strict):
    """Start a retraining job when the alert fires, at most once per `cooldown` per project."""

    cooldown: Duration = 86400.0


class RegistryAction(_Strict):
    """On an `experiment:` alert firing: record the live verdict on the candidate's model
    version (when the registry has a version of that name) and, opt in, promote a candidate
    that wins (as `driftline models promote`: refused if the gate rejected it) or roll back one
    that loses while it is in service."""

    promote: bool = False
    rollback: bool = False


class Rule(_Strict):
    alert: str = Field(pattern=_NAME)
    when: When
    for_: Duration = Field(0.0, alias="for")
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    retrain: Retrain | None = None
    registry: RegistryAction | None = None

    @model_validator(mode="after")
    def _registry_on_experiments(self) -> Rule:
        if self.registry is not None and self.when.experiment is None:
            raise ValueError("registry: acts on live verdicts, so it needs when: experiment")
        return self

    @field_validator("labels")
    @classmethod
    def _label_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not re.match(_NAME, name):
                raise ValueError(f"label name {name!r} must match {_NAME}")
        return value


# -- notification policy -----------------------------------------------------------------------


class WebhookConfig(_Strict):
    url: str = Field(pattern=r"^https?://")
    secret: SecretStr | None = Field(None, description="Standard Webhooks secret, whsec_<base64>")
    timeout: Duration = 10.0
    send_resolved: bool = True

    @field_validator("secret")
    @classmethod
    def _secret_form(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            from standardwebhooks import Webhook

            try:
                Webhook(value.get_secret_value())
            except Exception:
                raise ValueError("secret must be whsec_ followed by base64") from None
        return value


class SlackConfig(_Strict):
    url: SecretStr = Field(description="incoming-webhook URL (it is the secret)")
    timeout: Duration = 10.0
    send_resolved: bool = True

    @field_validator("url")
    @classmethod
    def _https(cls, value: SecretStr) -> SecretStr:
        if not re.match(r"^https?://", value.get_secret_value()):
            raise ValueError("url must start with http:// or https://")
        return value


class Receiver(_Strict):
    name: str = Field(pattern=r"^[\w.-]+$")
    webhook: WebhookConfig | None = None
    slack: SlackConfig | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Receiver:
        if (self.webhook is None) == (self.slack is None):
            raise ValueError("give exactly one of webhook or slack")
        return self

    @property
    def kind(self) -> Literal["webhook", "slack"]:
        return "webhook" if self.webhook is not None else "slack"

    @property
    def send_resolved(self) -> bool:
        config = self.webhook or self.slack
        assert config is not None
        return config.send_resolved


class Route(_Strict):
    receiver: str | None = None
    matchers: Matchers = Field(default_factory=list)
    group_by: list[str] | None = None
    group_wait: Duration | None = None
    group_interval: Duration | None = None
    repeat_interval: Duration | None = None
    continue_: bool = Field(False, alias="continue")
    routes: list[Route] = Field(default_factory=list)


class InhibitRule(_Strict):
    source_matchers: Matchers
    target_matchers: Matchers
    equal: list[str] = Field(default_factory=list)


class AlertmanagerTarget(_Strict):
    url: str = Field(pattern=r"^https?://")
    timeout: Duration = 10.0


class RetrainingLauncher(_Strict):
    """How a retraining job starts: a local command, or a signed webhook to a training system."""

    command: list[str] | None = None
    webhook: WebhookConfig | None = None
    timeout: Duration = 86400.0
    # More environment variables the command may see (beside retrain.JOB_ENVIRONMENT).
    pass_env: list[str] = Field(default_factory=list)
    # The file holding the job's project's admin key, `{project}` in the path standing for it:
    # each project's job speaks with its own project's key (DRIFTLINE_API_KEY).
    api_key_file: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> RetrainingLauncher:
        if (self.command is None) == (self.webhook is None):
            raise ValueError("give exactly one of command or webhook")
        if self.command is not None and not self.command:
            raise ValueError("command must name a program")
        if self.api_key_file is not None and "{project}" not in self.api_key_file:
            raise ValueError("api_key_file must name each project's key file with {project}")
        if self.api_key_file is not None and self.command is None:
            raise ValueError("api_key_file goes with command (a webhook carries no key)")
        return self


class RuleFile(_Strict):
    rules: list[Rule] = Field(default_factory=list)
    route: Route | None = None
    receivers: list[Receiver] = Field(default_factory=list)
    inhibit_rules: list[InhibitRule] = Field(default_factory=list)
    alertmanagers: list[AlertmanagerTarget] = Field(default_factory=list)
    retraining: RetrainingLauncher | None = None

    @model_validator(mode="after")
    def _consistent(self) -> RuleFile:
        names = [r.alert for r in self.rules]
        if dupes := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"alert names must be unique: {', '.join(dupes)} repeated")
        receivers = {r.name for r in self.receivers}
        if len(receivers) != len(self.receivers):
            raise ValueError("receiver names must be unique")
        if self.route is not None:
            if self.route.receiver is None:
                raise ValueError("route: the top-level route needs a receiver")
            for receiver in _route_receivers(self.route):
                if receiver not in receivers:
                    raise ValueError(f"route: receiver {receiver!r} is not defined in receivers")
        if self.retraining is None and any(r.retrain for r in self.rules):
            raise ValueError("a rule has retrain: but the file has no retraining: launcher")
        return self


def _route_receivers(route: Route) -> list[str]:
    own = [route.receiver] if route.receiver else []
    return own + [name for child in route.routes for name in _route_receivers(child)]


# -- loading -----------------------------------------------------------------------------------

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def load_rules(path: Path) -> RuleFile:
    """Parse and validate a rules file; raise RulesError listing `file:line: problem`."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise RulesError(f"{path}: cannot read: {exc.strerror}") from None
    return parse_rules(text, str(path))


def parse_rules(text: str, origin: str = "<rules>") -> RuleFile:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 0
        problem = getattr(exc, "problem", None) or str(exc)
        raise RulesError(f"{origin}:{line}: YAML syntax: {problem}") from None
    if root is None:
        return RuleFile()
    if not isinstance(root, yaml.MappingNode):
        raise RulesError(f"{origin}:1: the file must be a mapping with rules:, route:, ...")
    problems: list[str] = []
    data = _expand_env(_construct(root), root, origin, problems)
    if problems:
        raise RulesError("\n".join(problems))
    try:
        return RuleFile.model_validate(data)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            loc = list(error["loc"])
            where = ".".join(str(p) for p in loc) or "file"
            message = error["msg"].removeprefix("Value error, ")
            lines.append(f"{origin}:{_line(root, loc)}: {where}: {message}")
        raise RulesError("\n".join(lines)) from None


def _construct(node: yaml.Node) -> Any:
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _expand_env(value: Any, node: yaml.Node, origin: str, problems: list[str]) -> Any:
    """Replace `${VAR}` in strings by the environment's value, so secrets stay out of files."""
    if isinstance(value, dict) and isinstance(node, yaml.MappingNode):
        children = {k.value: v for k, v in node.value if isinstance(k, yaml.ScalarNode)}
        return {
            k: _expand_env(v, children.get(k, node), origin, problems) for k, v in value.items()
        }
    if isinstance(value, list) and isinstance(node, yaml.SequenceNode):
        return [_expand_env(v, n, origin, problems) for v, n in zip(value, node.value, strict=True)]
    if isinstance(value, str):

        def lookup(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in os.environ:
                problems.append(
                    f"{origin}:{node.start_mark.line + 1}: environment variable {name} is not set"
                )
                return ""
            return os.environ[name]

        return _ENV.sub(lookup, value)
    return value


def _line(root: yaml.Node, loc: list[Any]) -> int:
    """The 1-based line of the deepest key or item of `loc` that exists in the YAML."""
    node, line = root, root.start_mark.line
    for part in loc:
        child = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == part:
                    child, line = value, key.start_mark.line
                    break
        elif (
            isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value)
        ):
            child = node.value[part]
            line = child.start_mark.line
        if child is None:
            break
        node = child
    return line + 1
