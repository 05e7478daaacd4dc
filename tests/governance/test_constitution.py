from __future__ import annotations

import dataclasses
import hashlib
import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from governance.constitution import (
    CONSTITUTION,
    DAY_S,
    HOUR_S,
    ZONE_TEMPLATE_KEY,
    ParameterChange,
    ParameterSpec,
    ParameterValue,
    apply_constitution_changes,
    apply_fare_changes,
    canonical_json,
    changes_hash,
    changes_json,
    check_value,
    fare_policy_values,
    governed_values,
    governing_rule,
    parse_value,
    rule_from_json,
    rule_json,
    spec_from_json,
    spec_json,
    validate_change,
    validate_changes,
    value_text,
)
from governance.errors import (
    ParameterChangedMeanwhile,
    ParameterChangesInvalid,
    ParameterOutOfBounds,
    ParameterStepTooLarge,
    ParameterValueInvalid,
    UnknownParameter,
)
from payments.policy import FarePolicy
from tests.payments.factories import make_policy

DOCS = Path(__file__).parent.parent.parent / "docs"
NEXT_ID = uuid.UUID("00000000-0000-4000-8000-000000000002")
NEXT_AT = datetime(2025, 7, 1, tzinfo=UTC)


def spec(key: str) -> ParameterSpec:
    return CONSTITUTION.spec(key)


def values(**overrides: object) -> dict[str, ParameterValue]:
    policy = make_policy(**overrides)
    return governed_values(policy, CONSTITUTION, fairness_weight_s=60)


def test_the_fare_parameters_are_exactly_the_fare_policy_fields() -> None:
    identity = {"id", "version", "effective_at", "currency", "zone_surcharges"}
    fields = {f.name for f in dataclasses.fields(FarePolicy)} - identity
    fare_keys = {
        key.removeprefix("fare.")
        for key in CONSTITUTION.specs
        if key.startswith("fare.") and key != ZONE_TEMPLATE_KEY
    }
    assert fare_keys == fields


def test_the_constitution_governs_dispatch_and_its_own_rules() -> None:
    rules = {
        f"constitution.{name}.{rule}"
        for name in ("ordinary", "fundamental")
        for rule in ("quorum", "notice_period_s", "voting_window_s", "timelock_s")
    }
    expected = rules | {
        "constitution.ordinary.threshold",
        "constitution.cosigners_required",
        "dispatch.fairness_weight_s",
    }
    assert expected <= set(CONSTITUTION.specs)


def test_commission_reserve_and_the_constitution_need_two_thirds() -> None:
    fundamental = CONSTITUTION.rule_class("fundamental")
    assert fundamental.threshold == "two_thirds"
    two_thirds_keys = {
        key
        for key, s in CONSTITUTION.specs.items()
        if CONSTITUTION.rule_class(s.rule_class).threshold == "two_thirds"
    }
    assert {"fare.commission_rate", "fare.reserve_rate"} <= two_thirds_keys
    assert {k for k in CONSTITUTION.specs if k.startswith("constitution.")} <= two_thirds_keys


def test_the_ordinary_class_has_the_founding_defaults() -> None:
    ordinary = CONSTITUTION.rule_class("ordinary")
    assert ordinary.quorum == Decimal("0.25")
    assert ordinary.threshold == "simple_majority"
    assert (ordinary.notice_period_s, ordinary.voting_window_s, ordinary.timelock_s) == (
        7 * DAY_S,
        7 * DAY_S,
        2 * DAY_S,
    )


def test_defaults_and_the_constitution_in_force_agree() -> None:
    for key, current in values().items():
        if key.startswith("constitution."):
            assert current == spec(key).default, key


@pytest.mark.parametrize("edge", ["minimum", "maximum"])
def test_every_fare_policy_within_the_bounds_is_valid(edge: str) -> None:
    # The bounds alone keep FarePolicy's own invariants (commission + reserve <= 1,
    # surge cap >= 1, quotes live > 0 s): no vote can produce a policy that cannot exist.
    fields = {
        key.removeprefix("fare."): getattr(s, edge)
        for key, s in CONSTITUTION.specs.items()
        if key.startswith("fare.") and key != ZONE_TEMPLATE_KEY
    }
    zone = getattr(CONSTITUTION.specs[ZONE_TEMPLATE_KEY], edge)
    assert make_policy(**fields, zone_surcharges={"airport": zone}) is not None


def test_a_spec_refuses_limits_off_its_grid() -> None:
    with pytest.raises(ValueError, match="granularity grid"):
        dataclasses.replace(spec("fare.surge_cap"), max_step=Decimal("0.52"))


def test_a_spec_refuses_bounds_of_the_wrong_type() -> None:
    with pytest.raises(ValueError, match="are ints"):
        dataclasses.replace(spec("fare.base_fare"), maximum=Decimal(2000))


def test_an_unknown_key_is_refused() -> None:
    with pytest.raises(UnknownParameter) as refused:
        CONSTITUTION.spec("fare.tip_share")
    assert refused.value.extra == {"key": "fare.tip_share"}
    assert refused.value.status == 422


def test_a_zone_surcharge_key_gets_the_template_under_its_own_key() -> None:
    found = spec("fare.zone_surcharges.airport")
    assert found.key == "fare.zone_surcharges.airport"
    assert found.maximum == CONSTITUTION.specs[ZONE_TEMPLATE_KEY].maximum


@pytest.mark.parametrize(
    "key", ["fare.zone_surcharges.Airport", "fare.zone_surcharges.", "fare.zone_surcharges.<zone>"]
)
def test_a_malformed_zone_key_is_unknown(key: str) -> None:
    with pytest.raises(UnknownParameter):
        CONSTITUTION.spec(key)


def test_a_value_below_the_minimum_names_the_bound() -> None:
    with pytest.raises(ParameterOutOfBounds) as refused:
        validate_change(spec("fare.quote_ttl_s"), 60, 59)
    assert refused.value.extra == {
        "key": "fare.quote_ttl_s",
        "bound": "minimum",
        "minimum": "60",
        "proposed": "59",
    }


def test_a_value_above_the_maximum_names_the_bound() -> None:
    with pytest.raises(ParameterOutOfBounds) as refused:
        validate_change(spec("fare.commission_rate"), Decimal("0.29"), Decimal("0.301"))
    assert refused.value.extra["bound"] == "maximum"
    assert refused.value.extra["maximum"] == "0.3"
    assert refused.value.status == 422


def test_a_step_larger_than_allowed_names_the_bound() -> None:
    with pytest.raises(ParameterStepTooLarge) as refused:
        validate_change(spec("fare.commission_rate"), Decimal("0.15"), Decimal("0.121"))
    assert refused.value.extra == {
        "key": "fare.commission_rate",
        "bound": "max_step",
        "max_step": "0.02",
        "current": "0.15",
        "proposed": "0.121",
    }


def test_a_step_of_exactly_the_max_step_is_allowed() -> None:
    validate_change(spec("fare.commission_rate"), Decimal("0.15"), Decimal("0.13"))
    validate_change(spec("fare.base_fare"), 250, 350)


def test_the_step_is_absolute_so_a_value_can_leave_zero() -> None:
    validate_change(spec("fare.reserve_rate"), Decimal(0), Decimal("0.02"))


def test_the_step_is_measured_from_a_current_value_outside_the_bounds() -> None:
    validate_change(spec("fare.base_fare"), 2_050, 2_000)
    with pytest.raises(ParameterStepTooLarge):
        validate_change(spec("fare.base_fare"), 2_500, 2_000)


def test_a_value_off_the_grid_is_refused() -> None:
    with pytest.raises(ParameterValueInvalid) as refused:
        validate_change(spec("fare.commission_rate"), Decimal("0.15"), Decimal("0.1505"))
    assert refused.value.extra["granularity"] == "0.001"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("fare.base_fare", 2.5),
        ("fare.base_fare", True),
        ("fare.base_fare", Decimal(300)),
        ("fare.commission_rate", 0.15),
        ("fare.commission_rate", Decimal("NaN")),
        ("constitution.ordinary.threshold", "unanimity"),
    ],
)
def test_a_value_of_the_wrong_type_is_refused(key: str, value: object) -> None:
    with pytest.raises(ParameterValueInvalid):
        check_value(spec(key), value)


def test_a_choice_may_change_to_any_of_its_choices() -> None:
    validate_change(spec("constitution.ordinary.threshold"), "simple_majority", "two_thirds")


def test_a_valid_change_set_passes() -> None:
    validate_changes(
        CONSTITUTION,
        values(),
        [
            ParameterChange("fare.base_fare", 250, 300),
            ParameterChange("fare.zone_surcharges.stadium", 0, 200),
            ParameterChange("fare.zone_surcharges.airport", 450, 400),
            ParameterChange("dispatch.fairness_weight_s", 60, 90),
        ],
    )


def test_an_empty_change_set_is_refused() -> None:
    with pytest.raises(ParameterChangesInvalid):
        validate_changes(CONSTITUTION, values(), [])
    validate_changes(CONSTITUTION, values(), [], allow_empty=True)


def test_a_key_changed_twice_is_refused() -> None:
    changes = [
        ParameterChange("fare.base_fare", 250, 300),
        ParameterChange("fare.base_fare", 250, 200),
    ]
    with pytest.raises(ParameterChangesInvalid) as refused:
        validate_changes(CONSTITUTION, values(), changes)
    assert refused.value.extra["key"] == "fare.base_fare"


def test_a_change_from_a_stale_value_is_a_conflict() -> None:
    with pytest.raises(ParameterChangedMeanwhile) as refused:
        validate_changes(
            CONSTITUTION, values(base_fare=260), [ParameterChange("fare.base_fare", 250, 300)]
        )
    assert refused.value.status == 409
    assert refused.value.extra == {"key": "fare.base_fare", "expected": "250", "current": "260"}


def test_a_change_to_the_value_in_force_is_refused() -> None:
    with pytest.raises(ParameterChangesInvalid):
        validate_changes(CONSTITUTION, values(), [ParameterChange("fare.base_fare", 250, 250)])


def test_the_fundamental_threshold_is_entrenched() -> None:
    # No spec exists for it, and a forged one is refused before its value is looked at.
    forged = dataclasses.replace(
        CONSTITUTION,
        specs={
            **CONSTITUTION.specs,
            "constitution.fundamental.threshold": dataclasses.replace(
                spec("constitution.ordinary.threshold"), key="constitution.fundamental.threshold"
            ),
        },
    )
    change = ParameterChange("constitution.fundamental.threshold", "two_thirds", "simple_majority")
    with pytest.raises(UnknownParameter):
        validate_changes(CONSTITUTION, values(), [change])
    with pytest.raises(ParameterValueInvalid, match="entrenched"):
        validate_changes(forged, values(), [change])


def test_a_proposal_is_decided_by_its_parameters_class() -> None:
    assert governing_rule(CONSTITUTION, ["fare.base_fare", "fare.per_km"]).name == "ordinary"
    assert governing_rule(CONSTITUTION, ["fare.commission_rate"]).name == "fundamental"


def test_a_mixed_proposal_takes_the_strictest_of_each_rule() -> None:
    lenient_fundamental = dataclasses.replace(
        CONSTITUTION.rule_class("fundamental"), notice_period_s=DAY_S, quorum=Decimal("0.2")
    )
    constitution = dataclasses.replace(
        CONSTITUTION,
        rule_classes={**CONSTITUTION.rule_classes, "fundamental": lenient_fundamental},
    )
    rule = governing_rule(constitution, ["fare.commission_rate", "fare.base_fare"])
    assert rule.name == "ordinary+fundamental"
    assert rule.threshold == "two_thirds"
    assert rule.quorum == Decimal("0.25")
    assert rule.notice_period_s == 7 * DAY_S
    assert rule.voting_window_s == 14 * DAY_S


@given(st.decimals(min_value=Decimal("-1e6"), max_value=Decimal("1e6"), places=6))
def test_value_text_reads_back_as_the_same_decimal(value: Decimal) -> None:
    text = value_text(value)
    assert "E" not in text
    assert not ("." in text and text.endswith("0"))
    assert parse_value(spec("fare.surge_cap"), text) == value


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (Decimal("0.150"), "0.15"),
        (Decimal("1E+2"), "100"),
        (Decimal("-0"), "0"),
        (Decimal("10.0"), "10"),
        (250, "250"),
    ],
)
def test_value_text_is_canonical(value: ParameterValue, text: str) -> None:
    assert value_text(value) == text


@pytest.mark.parametrize("text", ["1e3", "0x10", " 1", "1.", ".5", "1,5", ""])
def test_parse_value_refuses_other_notations(text: str) -> None:
    with pytest.raises(ParameterValueInvalid):
        parse_value(spec("fare.surge_cap"), text)


def test_a_change_set_hashes_as_its_documented_canonical_json() -> None:
    changes = [
        ParameterChange("fare.per_km", 120, 130),
        ParameterChange("fare.commission_rate", Decimal("0.15"), Decimal("0.140")),
    ]
    text = (
        '[{"key":"fare.commission_rate","new":"0.14","old":"0.15"},'
        '{"key":"fare.per_km","new":"130","old":"120"}]'
    )
    assert canonical_json(changes_json(changes)) == text
    assert changes_hash(changes) == hashlib.sha256(text.encode()).hexdigest()


def test_the_order_of_changes_does_not_change_the_hash() -> None:
    a = ParameterChange("fare.per_km", 120, 130)
    b = ParameterChange("fare.base_fare", 250, 300)
    assert changes_hash([a, b]) == changes_hash([b, a])
    assert changes_hash([a, b]) != changes_hash([a, ParameterChange("fare.base_fare", 250, 301)])


def test_canonical_json_is_ascii_with_sorted_keys() -> None:
    assert canonical_json({"b": "é", "a": [1, None, True]}) == '{"a":[1,null,true],"b":"\\u00e9"}'


def test_applying_fare_changes_makes_the_next_version() -> None:
    policy = make_policy()
    changes = [
        ParameterChange("fare.base_fare", 250, 300),
        ParameterChange("fare.commission_rate", Decimal("0.15"), Decimal("0.13")),
        ParameterChange("fare.zone_surcharges.stadium", 0, 200),
        ParameterChange("fare.zone_surcharges.airport", 450, 0),
    ]
    applied = apply_fare_changes(
        CONSTITUTION, policy, changes, policy_id=NEXT_ID, version=2, effective_at=NEXT_AT
    )
    assert (applied.id, applied.version, applied.effective_at) == (NEXT_ID, 2, NEXT_AT)
    assert applied.base_fare == 300
    assert applied.commission_rate == Decimal("0.13")
    assert applied.zone_surcharges == {"stadium": 200}
    assert applied.currency == policy.currency
    differing = fare_policy_values(policy).items() ^ fare_policy_values(applied).items()
    assert {key for key, _ in differing} == {c.key for c in changes}


def test_applying_a_change_from_a_value_since_moved_is_a_conflict() -> None:
    with pytest.raises(ParameterChangedMeanwhile):
        apply_fare_changes(
            CONSTITUTION,
            make_policy(base_fare=260),
            [ParameterChange("fare.base_fare", 250, 300)],
            policy_id=NEXT_ID,
            version=2,
            effective_at=NEXT_AT,
        )


def test_a_fare_policy_takes_only_fare_changes() -> None:
    with pytest.raises(ValueError, match="not a fare parameter"):
        apply_fare_changes(
            CONSTITUTION,
            make_policy(),
            [ParameterChange("dispatch.fairness_weight_s", 60, 90)],
            policy_id=NEXT_ID,
            version=2,
            effective_at=NEXT_AT,
        )


def test_applying_constitution_changes_changes_its_rules() -> None:
    changed = apply_constitution_changes(
        CONSTITUTION,
        [
            ParameterChange("constitution.ordinary.threshold", "simple_majority", "two_thirds"),
            ParameterChange("constitution.fundamental.timelock_s", 7 * DAY_S, 7 * DAY_S + HOUR_S),
            ParameterChange("constitution.cosigners_required", 5, 8),
        ],
    )
    assert changed.rule_class("ordinary").threshold == "two_thirds"
    assert changed.rule_class("fundamental").timelock_s == 7 * DAY_S + HOUR_S
    assert changed.cosigners_required == 8
    assert changed.specs == CONSTITUTION.specs
    assert CONSTITUTION.rule_class("ordinary").threshold == "simple_majority"


def test_specs_and_rules_read_back_from_their_json() -> None:
    for key, original in CONSTITUTION.specs.items():
        assert spec_from_json(json.loads(canonical_json(spec_json(original)))) == (
            dataclasses.replace(original, description="")
        ), key
    for rule in CONSTITUTION.rule_classes.values():
        assert rule_from_json(json.loads(canonical_json(rule_json(rule)))) == rule


def test_error_extras_are_plain_json() -> None:
    # api/problems.py renders extras with the standard JSON encoder.
    with pytest.raises(ParameterOutOfBounds) as refused:
        validate_change(spec("fare.surge_cap"), Decimal("2.5"), Decimal("5.5"))
    assert json.loads(json.dumps(refused.value.extra))["maximum"] == "5"


# -- docs/governance.md ------------------------------------------------------------------


def _human(seconds: int) -> str:
    if seconds >= DAY_S and seconds % DAY_S == 0:
        return f" ({seconds // DAY_S} d)"
    if seconds >= HOUR_S and seconds % HOUR_S == 0:
        return f" ({seconds // HOUR_S} h)"
    return ""


def _cell(value: ParameterValue | None, kind: str) -> str:
    if value is None:
        return "—"
    text = f"`{value_text(value)}`"
    return text + _human(value) if kind == "duration_s" and isinstance(value, int) else text


def _spec_row(s: ParameterSpec) -> str:
    unit = s.unit if s.kind != "choice" else "one of " + ", ".join(f"`{c}`" for c in s.choices)
    cells = [
        f"`{s.key}`",
        s.description,
        s.kind,
        unit,
        *(_cell(v, s.kind) for v in (s.default, s.minimum, s.maximum, s.max_step, s.granularity)),
        s.rule_class,
    ]
    return "| " + " | ".join(cells) + " |"


def _table_rows(text: str, header: str) -> list[str]:
    lines = text.splitlines()
    start = lines.index(header) + 2
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append(line)
    return rows


def test_the_parameter_table_in_the_docs_is_the_constitution() -> None:
    text = (DOCS / "governance.md").read_text()
    header = next(line for line in text.splitlines() if line.startswith("| key | what |"))
    assert _table_rows(text, header) == [_spec_row(s) for s in CONSTITUTION.specs.values()]


def test_the_rule_class_table_in_the_docs_is_the_constitution() -> None:
    text = (DOCS / "governance.md").read_text()
    header = next(line for line in text.splitlines() if line.startswith("| class | quorum |"))
    expected = [
        f"| {r.name} | `{value_text(r.quorum)}` | `{r.threshold}` | "
        f"{_cell(r.notice_period_s, 'duration_s')} | {_cell(r.voting_window_s, 'duration_s')} | "
        f"{_cell(r.timelock_s, 'duration_s')} |"
        for r in CONSTITUTION.rule_classes.values()
    ]
    assert _table_rows(text, header) == expected
