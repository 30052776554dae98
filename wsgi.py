"""WSGI entry point for running under any WSGI server: `gunicorn wsgi:app`."""

from idp import create_app
from idp.server import release_large_blocks_to_the_os

release_large_blocks_to_the_os()  # see idp/server.py: argon2's blocks go back to the OS after each hash
app = create_app()
