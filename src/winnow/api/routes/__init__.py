"""Thin routers: validate, authorize, delegate to services."""
