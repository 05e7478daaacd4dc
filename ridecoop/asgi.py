"""The ASGI entry point uvicorn imports in each api worker process."""

from __future__ import annotations

from fastapi import FastAPI

from api.app import create_app


def app_factory() -> FastAPI:
    return create_app()
