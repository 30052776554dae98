"""Pure Python: the objects the rooms pass between them. Imports nothing from idp."""
