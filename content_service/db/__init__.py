"""The relational database: models, engine, sessions and migrations."""
