"""Hashing, random values and signing keys."""
