"""The pricing constitution: every parameter members govern, its bounds and its rules.

Pure: data in, values or domain errors out. docs/governance.md lists the defaults.

- A parameter's key names where it lives: ``fare.<FarePolicy field>`` (zone surcharges are
  ``fare.zone_surcharges.<zone code>``), ``dispatch.fairness_weight_s``, and
  ``constitution.<rule class>.<rule>`` or ``constitution.cosigners_required`` for the
  constitution's own rules.
- Kinds: ``money`` (int minor units of the fare policy's currency), ``int``,
  ``duration_s`` (int seconds), ``decimal`` (``Decimal``), ``choice`` (one of ``choices``).
- A numeric value must lie in ``[minimum, maximum]`` and be a whole multiple of
  ``granularity``; one change may move it at most ``max_step``, an absolute amount in
  the parameter's own unit (0.02 on a rate is two percentage points) whatever the
  current value, so that a change from zero is as bounded as any other.
- Each parameter belongs to a rule class (quorum, threshold, notice, voting window,
  timelock). A proposal touching several classes is decided under the strictest value of
  each rule among them (``governing_rule``).
- The fundamental class's two-thirds threshold is entrenched: the issue that founded
  the constitution requires two-thirds for the commission and the constitution itself,
  so no vote can lower it. Which class a parameter belongs to and its bounds are code,
  changed by a release, not by a vote.
- Values are written as text everywhere outside Python (``value_text``): an int in
  decimal digits, a Decimal in plain notation without trailing zeros, a choice as is.
  JSON numbers would make rates floats in most readers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, TypeAlias, get_args

from governance.errors import (
    ParameterChangedMeanwhile,
    ParameterChangesInvalid,
    ParameterOutOfBounds,
    ParameterStepTooLarge,
    ParameterValueInvalid,
    UnknownParameter,
)
from payments.policy import FarePolicy

ParameterKind = Literal["money", "int", "duration_s", "decimal", "choice"]
Threshold = Literal["simple_majority", "two_thirds"]
ParameterValue: TypeAlias = int | Decimal | str
JsonValue: TypeAlias = str | int | bool | Sequence["JsonValue"] | Mapping[str, "JsonValue"] | None

THRESHOLDS: tuple[Threshold, ...] = get_args(Threshold)
INTEGER_KINDS = frozenset({"money", "int", "duration_s"})
FARE_PREFIX = "fare."
ZONE_PREFIX = "fare.zone_surcharges."
ZONE_TEMPLATE_KEY = ZONE_PREFIX + "<zone>"
# The length of dispatch's zone codes (String(64)); lower case keeps keys unambiguous.
ZONE_CODE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
RULE_KEY = re.compile(r"constitution\.([a-z_]+)\.(quorum|threshold|[a-z_]+_s)")
COSIGNERS_KEY = "constitution.cosigners_required"
_INTEGER_TEXT = re.compile(r"-?[0-9]+")
_DECIMAL_TEXT = re.compile(r"-?[0-9]+(\.[0-9]+)?")

DAY_S = 86_400
HOUR_S = 3_600


def canonical_json(value: JsonValue) -> str:
    """The one text of a JSON value that every hash in governance is taken over: keys
    sorted, no whitespace, every non-ASCII character escaped (so the text is ASCII and
    its UTF-8 bytes are its characters). Floats are not JSON values here."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def value_text(value: ParameterValue) -> str:
    """The canonical text of a value: ``250``, ``0.15`` (never ``0.150`` or ``1.5E-1``),
    ``two_thirds``."""
    if isinstance(value, bool):
        raise TypeError("a parameter value is not a bool")
    if isinstance(value, int | str):
        return str(value)
    if not value.is_finite():
        raise ValueError(f"{value} is not a finite value")
    if value == 0:
        return "0"
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


@dataclass(frozen=True, slots=True)
class RuleClass:
    """How a proposal of this class is decided. ``quorum`` is the share of the frozen
    electorate that must cast a ballot (abstentions included)."""

    name: str
    quorum: Decimal
    threshold: Threshold
    notice_period_s: int
    voting_window_s: int
    timelock_s: int

    def __post_init__(self) -> None:
        if not isinstance(self.quorum, Decimal) or not 0 < self.quorum <= 1:
            raise ValueError("quorum is a Decimal in (0, 1]")
        if self.threshold not in THRESHOLDS:
            raise ValueError(f"threshold is one of {THRESHOLDS}")
        if min(self.notice_period_s, self.voting_window_s, self.timelock_s) < 0:
            raise ValueError("periods are >= 0 s")


@dataclass(frozen=True, slots=True)
class ParameterSpec:
    """One governable parameter. Numeric kinds set ``minimum``, ``maximum``,
    ``max_step`` and ``granularity`` (all of the kind's Python type, all multiples of
    ``granularity``); ``choice`` sets ``choices`` instead and has no step limit."""

    key: str
    kind: ParameterKind
    unit: str
    description: str
    minimum: int | Decimal | None
    maximum: int | Decimal | None
    max_step: int | Decimal | None
    rule_class: str
    default: ParameterValue
    granularity: int | Decimal | None = None
    choices: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        limits = (self.minimum, self.maximum, self.max_step, self.granularity)
        if self.kind == "choice":
            if any(n is not None for n in limits) or self.default not in self.choices:
                raise ValueError(f"{self.key}: a choice has choices, a default among them")
            return
        wanted = int if self.kind in INTEGER_KINDS else Decimal
        if any(type(n) is not wanted for n in (*limits, self.default)) or self.choices:
            raise ValueError(f"{self.key}: bounds, step and default are {wanted.__name__}s")
        minimum, maximum, max_step, granularity = _numbers(limits)
        if not (granularity > 0 and max_step > 0 and minimum <= maximum):
            raise ValueError(f"{self.key}: granularity and max_step > 0, minimum <= maximum")
        for number in (minimum, maximum, max_step):
            if number % granularity != 0:
                raise ValueError(f"{self.key}: {number} is off the granularity grid")
        check_value(self, self.default)


def _numbers(
    limits: tuple[int | Decimal | None, ...],
) -> tuple[int | Decimal, ...]:
    if any(n is None for n in limits):
        raise ValueError("a numeric parameter has bounds, a step and a granularity")
    return tuple(n for n in limits if n is not None)


@dataclass(frozen=True, slots=True)
class ParameterChange:
    key: str
    old: ParameterValue
    new: ParameterValue


@dataclass(frozen=True, slots=True)
class Constitution:
    """The specs (by key; the zone surcharge template under ``ZONE_TEMPLATE_KEY``), the
    rule classes in force, weakest first, and the co-signers a draft needs to enter
    notice. The ``default`` of a ``constitution.*`` spec is the founding value; the value
    in force is in ``rule_classes`` and ``cosigners_required``."""

    specs: Mapping[str, ParameterSpec]
    rule_classes: Mapping[str, RuleClass]
    cosigners_required: int
    # Rule classes whose threshold no vote can change.
    entrenched_thresholds: frozenset[str] = field(default_factory=frozenset)

    def spec(self, key: str) -> ParameterSpec:
        """The spec of ``key``; zone surcharge keys get the template with their own key.
        Raises ``UnknownParameter``."""
        found = self.specs.get(key)
        if found is not None and key != ZONE_TEMPLATE_KEY:
            return found
        if key.startswith(ZONE_PREFIX) and ZONE_CODE.fullmatch(key[len(ZONE_PREFIX) :]):
            return dataclasses.replace(self.specs[ZONE_TEMPLATE_KEY], key=key)
        raise UnknownParameter(key)

    def rule_class(self, name: str) -> RuleClass:
        return self.rule_classes[name]


def check_value(spec: ParameterSpec, value: object) -> None:
    """Raises ``ParameterValueInvalid`` (wrong type, off the grid, not a choice) or
    ``ParameterOutOfBounds`` (naming the bound) unless ``value`` is one ``spec`` allows."""
    if spec.kind == "choice":
        if not isinstance(value, str) or value not in spec.choices:
            raise ParameterValueInvalid(
                spec.key,
                f"must be one of {', '.join(spec.choices)}",
                choices=",".join(spec.choices),
            )
        return
    number: int | Decimal
    if spec.kind in INTEGER_KINDS:
        # bool is an int subclass; True is no amount of minor units.
        if not isinstance(value, int) or isinstance(value, bool):
            raise ParameterValueInvalid(spec.key, "must be a whole number")
        number = value
    else:
        if not isinstance(value, Decimal) or not value.is_finite():
            raise ParameterValueInvalid(spec.key, "must be a finite decimal number")
        number = value
    minimum, maximum, _, granularity = _numbers(
        (spec.minimum, spec.maximum, spec.max_step, spec.granularity)
    )
    if number < minimum:
        raise ParameterOutOfBounds(
            spec.key, bound="minimum", limit=value_text(minimum), proposed=value_text(number)
        )
    if number > maximum:
        raise ParameterOutOfBounds(
            spec.key, bound="maximum", limit=value_text(maximum), proposed=value_text(number)
        )
    if number % granularity != 0:
        raise ParameterValueInvalid(
            spec.key,
            f"must be a multiple of {value_text(granularity)}",
            granularity=value_text(granularity),
        )


def validate_change(
    spec: ParameterSpec, current_value: ParameterValue, proposed_value: ParameterValue
) -> None:
    """Raises unless ``proposed_value`` is a value of ``spec`` (``check_value``) no more
    than ``max_step`` away from ``current_value`` (``ParameterStepTooLarge``). The current
    value itself may lie outside today's bounds; the step is still measured from it."""
    check_value(spec, proposed_value)
    if spec.kind == "choice":
        return
    assert spec.max_step is not None
    if isinstance(current_value, str):
        raise TypeError(f"{spec.key} is numeric; its current value cannot be {current_value!r}")
    assert not isinstance(proposed_value, str)
    if abs(Decimal(proposed_value) - Decimal(current_value)) > spec.max_step:
        raise ParameterStepTooLarge(
            spec.key,
            max_step=value_text(spec.max_step),
            current=value_text(current_value),
            proposed=value_text(proposed_value),
        )


def validate_changes(
    constitution: Constitution,
    current_values: Mapping[str, ParameterValue],
    changes: Sequence[ParameterChange],
    *,
    allow_empty: bool = False,
) -> None:
    """Checks a set of changes against the constitution and the values in force
    (``governed_values``; a zone without a surcharge is at its default, 0). Each key at
    most once, each ``old`` the value in force (else ``ParameterChangedMeanwhile``), each
    ``new`` different from ``old`` and valid (``validate_change``), no entrenched rule
    touched. An empty set is refused unless ``allow_empty`` (a ranked alternative that
    keeps everything as it is)."""
    if not changes and not allow_empty:
        raise ParameterChangesInvalid("a proposal changes at least one parameter")
    seen: set[str] = set()
    for change in changes:
        spec = constitution.spec(change.key)
        if change.key in seen:
            raise ParameterChangesInvalid(f"{change.key} is changed twice", key=change.key)
        seen.add(change.key)
        _check_entrenched(constitution, change.key)
        current = current_values.get(change.key, spec.default)
        if change.old != current or type(change.old) is not type(current):
            raise ParameterChangedMeanwhile(
                change.key, expected=_text_or_repr(change.old), current=value_text(current)
            )
        if change.new == change.old:
            raise ParameterChangesInvalid(f"{change.key} is already {value_text(current)}")
        validate_change(spec, current, change.new)


def _text_or_repr(value: object) -> str:
    return value_text(value) if isinstance(value, int | Decimal | str) else repr(value)


def _check_entrenched(constitution: Constitution, key: str) -> None:
    found = RULE_KEY.fullmatch(key)
    entrenched = constitution.entrenched_thresholds
    if found and found.group(2) == "threshold" and found.group(1) in entrenched:
        raise ParameterValueInvalid(key, "this threshold is entrenched: no vote changes it")


def governing_rule(constitution: Constitution, keys: Iterable[str]) -> RuleClass:
    """The rules a proposal touching ``keys`` is decided by: its parameters' rule class,
    or, when they belong to several, a class named ``a+b`` taking the strictest value of
    each rule among them (highest quorum and periods, two-thirds if any has it)."""
    names = {constitution.spec(key).rule_class for key in keys}
    if not names:
        raise ValueError("a proposal governs at least one parameter")
    ordered = [rule for name, rule in constitution.rule_classes.items() if name in names]
    if len(ordered) == 1:
        return ordered[0]
    return RuleClass(
        name="+".join(rule.name for rule in ordered),
        quorum=max(rule.quorum for rule in ordered),
        threshold="two_thirds"
        if any(rule.threshold == "two_thirds" for rule in ordered)
        else "simple_majority",
        notice_period_s=max(rule.notice_period_s for rule in ordered),
        voting_window_s=max(rule.voting_window_s for rule in ordered),
        timelock_s=max(rule.timelock_s for rule in ordered),
    )


def parse_value(spec: ParameterSpec, text: str) -> ParameterValue:
    """The value written as ``text`` (``value_text``'s inverse; also accepts trailing
    zeros). Raises ``ParameterValueInvalid`` for text that is no value of the kind; bounds
    are ``check_value``'s business."""
    return _parse_text(spec.key, spec.kind, text)


def _parse_text(key: str, kind: ParameterKind, text: str) -> ParameterValue:
    if kind == "choice":
        return text
    if kind in INTEGER_KINDS:
        if not _INTEGER_TEXT.fullmatch(text):
            raise ParameterValueInvalid(key, f"{text!r} is not a whole number")
        return int(text)
    if not _DECIMAL_TEXT.fullmatch(text):
        raise ParameterValueInvalid(key, f"{text!r} is not a plain decimal number")
    return Decimal(text)


def change_json(change: ParameterChange) -> dict[str, str]:
    return {"key": change.key, "old": value_text(change.old), "new": value_text(change.new)}


def changes_json(changes: Iterable[ParameterChange]) -> list[dict[str, str]]:
    """A change set in its canonical order, by key: the order a proposal lists its
    changes in does not change what it is, nor its hash."""
    return [change_json(c) for c in sorted(changes, key=lambda c: c.key)]


def change_from_json(constitution: Constitution, item: Mapping[str, Any]) -> ParameterChange:
    key = item.get("key")
    old, new = item.get("old"), item.get("new")
    if not (isinstance(key, str) and isinstance(old, str) and isinstance(new, str)):
        raise ParameterChangesInvalid("a change is {key, old, new}, all three strings")
    spec = constitution.spec(key)
    return ParameterChange(key, parse_value(spec, old), parse_value(spec, new))


def changes_hash(changes: Iterable[ParameterChange]) -> str:
    """sha256 (hex) of ``canonical_json(changes_json(changes))``."""
    return sha256_hex(canonical_json(changes_json(changes)))


def spec_json(spec: ParameterSpec) -> dict[str, JsonValue]:
    def text(value: int | Decimal | None) -> str | None:
        return None if value is None else value_text(value)

    return {
        "key": spec.key,
        "kind": spec.kind,
        "unit": spec.unit,
        "minimum": text(spec.minimum),
        "maximum": text(spec.maximum),
        "max_step": text(spec.max_step),
        "granularity": text(spec.granularity),
        "choices": list(spec.choices),
        "rule_class": spec.rule_class,
        "default": value_text(spec.default),
    }


def spec_from_json(item: Mapping[str, Any]) -> ParameterSpec:
    """The spec ``spec_json`` wrote (without its description); raises ``ValueError`` or
    ``KeyError`` on anything else."""
    kind = item["kind"]
    if kind not in get_args(ParameterKind):
        raise ValueError(f"unknown parameter kind {kind!r}")

    def read(name: str) -> int | Decimal | None:
        raw = item[name]
        if raw is None:
            return None
        value = _parse_text(item["key"], kind, raw)
        assert not isinstance(value, str)
        return value

    default = _parse_text(item["key"], kind, item["default"])
    return ParameterSpec(
        key=item["key"],
        kind=kind,
        unit=item["unit"],
        description="",
        minimum=read("minimum"),
        maximum=read("maximum"),
        max_step=read("max_step"),
        granularity=read("granularity"),
        choices=tuple(item["choices"]),
        rule_class=item["rule_class"],
        default=default,
    )


def rule_json(rule: RuleClass) -> dict[str, JsonValue]:
    return {
        "name": rule.name,
        "quorum": value_text(rule.quorum),
        "threshold": rule.threshold,
        "notice_period_s": rule.notice_period_s,
        "voting_window_s": rule.voting_window_s,
        "timelock_s": rule.timelock_s,
    }


def rule_from_json(item: Mapping[str, Any]) -> RuleClass:
    return RuleClass(
        name=item["name"],
        quorum=Decimal(item["quorum"]),
        threshold=item["threshold"],
        notice_period_s=int(item["notice_period_s"]),
        voting_window_s=int(item["voting_window_s"]),
        timelock_s=int(item["timelock_s"]),
    )


# -- Values in force and applying passed changes ----------------------------------------

# FarePolicy fields without a key of their own: the version's identity and currency are
# not voted on, and zone surcharges are governed one zone at a time.
_FARE_IDENTITY = frozenset({"id", "version", "effective_at", "currency", "zone_surcharges"})
RULE_FIELDS = ("quorum", "threshold", "notice_period_s", "voting_window_s", "timelock_s")


def fare_policy_values(policy: FarePolicy) -> dict[str, ParameterValue]:
    """Every governed value of ``policy`` by key, its zone surcharges included."""
    values: dict[str, ParameterValue] = {
        FARE_PREFIX + f.name: getattr(policy, f.name)
        for f in dataclasses.fields(policy)
        if f.name not in _FARE_IDENTITY
    }
    values.update({ZONE_PREFIX + zone: amount for zone, amount in policy.zone_surcharges.items()})
    return values


def constitution_values(constitution: Constitution) -> dict[str, ParameterValue]:
    values: dict[str, ParameterValue] = {COSIGNERS_KEY: constitution.cosigners_required}
    for name, rule in constitution.rule_classes.items():
        for rule_field in RULE_FIELDS:
            key = f"constitution.{name}.{rule_field}"
            if key in constitution.specs:
                values[key] = getattr(rule, rule_field)
    return values


def governed_values(
    policy: FarePolicy, constitution: Constitution, *, fairness_weight_s: int
) -> dict[str, ParameterValue]:
    """The value in force of every governed parameter, by key."""
    return {
        **fare_policy_values(policy),
        "dispatch.fairness_weight_s": fairness_weight_s,
        **constitution_values(constitution),
    }


def apply_to_values(
    constitution: Constitution,
    values: Mapping[str, ParameterValue],
    changes: Iterable[ParameterChange],
) -> dict[str, ParameterValue]:
    """``values`` with ``changes`` applied. Each change must start from the value in
    force (a missing key is at its spec's default), else ``ParameterChangedMeanwhile``:
    another passed proposal moved it since, and the step was checked against the old."""
    result = dict(values)
    for change in changes:
        spec = constitution.spec(change.key)
        current = result.get(change.key, spec.default)
        if current != change.old or type(current) is not type(change.old):
            raise ParameterChangedMeanwhile(
                change.key, expected=value_text(change.old), current=value_text(current)
            )
        result[change.key] = change.new
    return result


def apply_fare_changes(
    constitution: Constitution,
    policy: FarePolicy,
    changes: Iterable[ParameterChange],
    *,
    policy_id: uuid.UUID,
    version: int,
    effective_at: datetime,
) -> FarePolicy:
    """The next fare policy version: ``policy`` with the ``fare.*`` changes applied, under
    a new id, version number and effective time. A zone surcharge set to 0 leaves the
    zone out (an unpriced zone adds nothing). Raises ``ValueError`` for a change that is
    not a fare parameter, ``ParameterChangedMeanwhile`` as ``apply_to_values``."""
    fare_changes = list(changes)
    for change in fare_changes:
        if not change.key.startswith(FARE_PREFIX):
            raise ValueError(f"{change.key} is not a fare parameter")
    values = apply_to_values(constitution, fare_policy_values(policy), fare_changes)
    fields: dict[str, Any] = {}
    zones: dict[str, int] = {}
    for key, value in values.items():
        if key.startswith(ZONE_PREFIX):
            if value != 0:
                assert isinstance(value, int)
                zones[key[len(ZONE_PREFIX) :]] = value
        else:
            fields[key[len(FARE_PREFIX) :]] = value
    return dataclasses.replace(
        policy,
        id=policy_id,
        version=version,
        effective_at=effective_at,
        zone_surcharges=dict(sorted(zones.items())),
        **fields,
    )


def apply_constitution_changes(
    constitution: Constitution, changes: Iterable[ParameterChange]
) -> Constitution:
    """The constitution with the ``constitution.*`` changes applied (rules and
    co-signers; specs never change by vote). Raises as ``apply_fare_changes``."""
    constitution_changes = list(changes)
    for change in constitution_changes:
        if not change.key.startswith("constitution."):
            raise ValueError(f"{change.key} is not a rule of the constitution")
    values = apply_to_values(constitution, constitution_values(constitution), constitution_changes)
    rules = {
        name: _rule_with(rule, values, f"constitution.{name}.")
        for name, rule in constitution.rule_classes.items()
    }
    cosigners = values[COSIGNERS_KEY]
    assert isinstance(cosigners, int)
    return dataclasses.replace(constitution, rule_classes=rules, cosigners_required=cosigners)


def _rule_with(rule: RuleClass, values: Mapping[str, ParameterValue], prefix: str) -> RuleClass:
    def number(name: str, current: int) -> int:
        value = values.get(prefix + name, current)
        assert isinstance(value, int)
        return value

    quorum = values.get(prefix + "quorum", rule.quorum)
    chosen = values.get(prefix + "threshold", rule.threshold)
    assert isinstance(quorum, Decimal)
    assert chosen in THRESHOLDS
    threshold: Threshold = "two_thirds" if chosen == "two_thirds" else "simple_majority"
    return RuleClass(
        name=rule.name,
        quorum=quorum,
        threshold=threshold,
        notice_period_s=number("notice_period_s", rule.notice_period_s),
        voting_window_s=number("voting_window_s", rule.voting_window_s),
        timelock_s=number("timelock_s", rule.timelock_s),
    )


# -- The founding constitution -----------------------------------------------------------

ORDINARY = RuleClass(
    name="ordinary",
    quorum=Decimal("0.25"),
    threshold="simple_majority",
    notice_period_s=7 * DAY_S,
    voting_window_s=7 * DAY_S,
    timelock_s=2 * DAY_S,
)
FUNDAMENTAL = RuleClass(
    name="fundamental",
    quorum=Decimal("0.40"),
    threshold="two_thirds",
    notice_period_s=14 * DAY_S,
    voting_window_s=14 * DAY_S,
    timelock_s=7 * DAY_S,
)
FOUNDING_COSIGNERS = 5

MINOR_UNITS = "minor units"
PER_KM = "minor units / km"
PER_MINUTE = "minor units / min"


def _money(
    key: str, description: str, default: int, maximum: int, step: int, unit: str = MINOR_UNITS
) -> ParameterSpec:
    return ParameterSpec(
        key=key,
        kind="money",
        unit=unit,
        description=description,
        minimum=0,
        maximum=maximum,
        max_step=step,
        granularity=1,
        rule_class="ordinary",
        default=default,
    )


def _seconds(
    key: str,
    description: str,
    default: int,
    bounds: tuple[int, int],
    step: int,
    *,
    granularity: int = 1,
    rule_class: str = "ordinary",
) -> ParameterSpec:
    return ParameterSpec(
        key=key,
        kind="duration_s",
        unit="s",
        description=description,
        minimum=bounds[0],
        maximum=bounds[1],
        max_step=step,
        granularity=granularity,
        rule_class=rule_class,
        default=default,
    )


def _decimal(
    key: str,
    unit: str,
    description: str,
    default: str,
    bounds: tuple[str, str],
    step: str,
    granularity: str,
    rule_class: str = "ordinary",
) -> ParameterSpec:
    return ParameterSpec(
        key=key,
        kind="decimal",
        unit=unit,
        description=description,
        minimum=Decimal(bounds[0]),
        maximum=Decimal(bounds[1]),
        max_step=Decimal(step),
        granularity=Decimal(granularity),
        rule_class=rule_class,
        default=Decimal(default),
    )


def _rule_specs(rule: RuleClass, *, threshold_governed: bool) -> list[ParameterSpec]:
    prefix = f"constitution.{rule.name}"
    specs = [
        _decimal(
            f"{prefix}.quorum",
            "share of the electorate",
            f"Share of the frozen electorate that must cast a ballot on a {rule.name} "
            "proposal (abstentions count)",
            value_text(rule.quorum),
            ("0.10", "0.75"),
            "0.10",
            "0.01",
            "fundamental",
        ),
        _seconds(
            f"{prefix}.notice_period_s",
            f"Time a {rule.name} proposal is on notice, frozen, before voting opens",
            rule.notice_period_s,
            (DAY_S, 30 * DAY_S),
            7 * DAY_S,
            granularity=HOUR_S,
            rule_class="fundamental",
        ),
        _seconds(
            f"{prefix}.voting_window_s",
            f"How long voting on a {rule.name} proposal stays open",
            rule.voting_window_s,
            (DAY_S, 30 * DAY_S),
            7 * DAY_S,
            granularity=HOUR_S,
            rule_class="fundamental",
        ),
        _seconds(
            f"{prefix}.timelock_s",
            f"Time between a {rule.name} proposal passing and its change applying",
            rule.timelock_s,
            (HOUR_S, 30 * DAY_S),
            7 * DAY_S,
            granularity=HOUR_S,
            rule_class="fundamental",
        ),
    ]
    if threshold_governed:
        specs.insert(
            1,
            ParameterSpec(
                key=f"{prefix}.threshold",
                kind="choice",
                unit="",
                description=f"Share of yes among yes and no that passes a {rule.name} proposal",
                minimum=None,
                maximum=None,
                max_step=None,
                rule_class="fundamental",
                default=rule.threshold,
                choices=THRESHOLDS,
            ),
        )
    return specs


_SPECS: list[ParameterSpec] = [
    _money("fare.base_fare", "Charged at the start of every ride", 250, 2_000, 100),
    _money("fare.per_km", "Charged per kilometre driven", 120, 1_000, 30, PER_KM),
    _money("fare.per_minute", "Charged per minute of the ride", 30, 500, 10, PER_MINUTE),
    _money("fare.booking_fee", "Added to every ride, never surged", 200, 1_000, 100),
    _money("fare.minimum_fare", "The least a ride part costs", 700, 5_000, 200),
    _money(
        "fare.waiting_per_minute",
        "Charged per minute of waiting after the grace",
        40,
        500,
        20,
        PER_MINUTE,
    ),
    _money(
        "fare.cancellation_fee",
        "Charged for a rider's cancellation after the grace",
        500,
        3_000,
        200,
    ),
    _money("fare.no_show_fee", "Charged when the rider does not show up", 700, 3_000, 200),
    _seconds("fare.waiting_grace_s", "Free waiting at pickup", 120, (0, 900), 120),
    _seconds("fare.cancellation_grace_s", "Free cancellation after requesting", 120, (0, 900), 120),
    _seconds("fare.quote_ttl_s", "How long an upfront quote stays valid", 300, (60, 1_800), 300),
    _decimal(
        "fare.surge_cap",
        "multiplier",
        "The highest surge multiplier",
        "2.5",
        ("1", "5"),
        "0.5",
        "0.05",
    ),
    _decimal(
        "fare.commission_rate",
        "share of the fare",
        "The co-op's share of each fare",
        "0.15",
        ("0", "0.30"),
        "0.02",
        "0.001",
        "fundamental",
    ),
    _decimal(
        "fare.reserve_rate",
        "share of the fare",
        "The reserve's share of each fare",
        "0.05",
        ("0", "0.20"),
        "0.02",
        "0.001",
        "fundamental",
    ),
    _decimal(
        "fare.deviation_tolerance",
        "share of the estimate",
        "How far a trip may deviate from its estimate before the fare is repriced",
        "0.25",
        ("0.05", "1"),
        "0.10",
        "0.01",
    ),
    _money(ZONE_TEMPLATE_KEY, "Added to a ride that starts or ends in the zone", 0, 2_000, 200),
    _seconds(
        "dispatch.fairness_weight_s",
        "Seconds of pickup ETA a fairness bonus may be worth to a driver",
        60,
        (0, 120),
        30,
    ),
    ParameterSpec(
        key=COSIGNERS_KEY,
        kind="int",
        unit="members",
        description="Co-signing members a draft needs to enter notice",
        minimum=1,
        maximum=100,
        max_step=5,
        granularity=1,
        rule_class="fundamental",
        default=FOUNDING_COSIGNERS,
    ),
    *_rule_specs(ORDINARY, threshold_governed=True),
    *_rule_specs(FUNDAMENTAL, threshold_governed=False),
]

CONSTITUTION = Constitution(
    specs={spec.key: spec for spec in _SPECS},
    rule_classes={ORDINARY.name: ORDINARY, FUNDAMENTAL.name: FUNDAMENTAL},
    cosigners_required=FOUNDING_COSIGNERS,
    entrenched_thresholds=frozenset({FUNDAMENTAL.name}),
)
