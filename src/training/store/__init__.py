"""The run store: experiments, runs, metrics and the model registry, in SQL (SQLite or
PostgreSQL), with Alembic owning the schema. Nothing outside this package touches SQLAlchemy
rows: it hands out the plain records of ``records``."""
