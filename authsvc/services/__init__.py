"""Use cases. Pure Python + SQLAlchemy: no Flask request objects, no marshmallow."""
