"""Alembic's migration environment (env.py) and history (versions/), shipped in the package."""
