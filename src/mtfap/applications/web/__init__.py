"""The local web page of ``mtfap serve``: :func:`create_app` builds the FastAPI application
(``app.py``) that serves the one static page (``index.html``, inline CSS and JS) and its JSON
API."""

from mtfap.applications.web.app import create_app

__all__ = ["create_app"]
