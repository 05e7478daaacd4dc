from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from accounts.contact import normalise_email, normalise_phone


class RegisterRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["rider", "driver"]
    email: str = Field(max_length=320, examples=["ana@example.org"])
    phone: str = Field(max_length=32, examples=["+15125550100"])
    full_name: str = Field(min_length=1, max_length=200)
    password: str = Field(min_length=10, max_length=256)

    @field_validator("email")
    @classmethod
    def _email(cls, value: str) -> str:
        return normalise_email(value)

    @field_validator("phone")
    @classmethod
    def _phone(cls, value: str) -> str:
        return normalise_phone(value)

    @field_validator("full_name")
    @classmethod
    def _name(cls, value: str) -> str:
        value = " ".join(value.split())
        if not value:
            raise ValueError("must not be blank")
        return value


class LoginRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    login: str = Field(min_length=3, max_length=320, description="Email or phone number")
    password: str = Field(min_length=1, max_length=256)


class RefreshRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    refresh_token: str = Field(min_length=16, max_length=256)


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="Seconds until the access token expires")
    refresh_expires_at: datetime


class UserRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    role: Literal["rider", "driver", "admin"]
    email: str
    phone: str | None
    full_name: str
    created_at: datetime
