"""Email and phone normalisation, so one person cannot hold two accounts by spelling."""

from __future__ import annotations

import phonenumbers
from email_validator import EmailNotValidError, validate_email


def normalise_email(value: str) -> str:
    """Lower-cased, IDNA-normalised address; raises ValueError when it is not one."""
    try:
        checked = validate_email(value.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from exc
    return checked.normalized.lower()


def normalise_phone(value: str) -> str:
    """E.164 form of an international number (``+`` and country code required)."""
    try:
        number = phonenumbers.parse(value.strip(), None)
    except phonenumbers.NumberParseException as exc:
        raise ValueError("not a phone number in international form, e.g. +15125550100") from exc
    if not phonenumbers.is_possible_number(number) or not phonenumbers.is_valid_number(number):
        raise ValueError("not a valid phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
