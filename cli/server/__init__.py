"""`xmodal serve`: the HTTP API and the web gallery (FastAPI on uvicorn)."""

from xmodal.cli.server.app import create_app
from xmodal.cli.server.settings import ServerSettings, is_loopback

__all__ = ["create_app", "ServerSettings", "is_loopback"]
