"""WSGI entry point: `gunicorn wsgi:app`, `flask --app wsgi …`."""

from authsvc import create_app

app = create_app()
