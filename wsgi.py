"""WSGI entry point for running under any WSGI server: `gunicorn wsgi:app`."""

from idp import create_app

app = create_app()
