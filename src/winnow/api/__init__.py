"""The HTTP edge: FastAPI app factory, dependencies, error rendering, routes."""

from winnow.api.app import create_app

__all__ = ["create_app"]
