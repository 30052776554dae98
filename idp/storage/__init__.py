"""The only room that touches SQLAlchemy or Redis."""
