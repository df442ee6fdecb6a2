"""appserver: the Tomcat role — the /test session demo, static files, /health and /metrics.

Sessions are handled entirely by sessionstore; run one server with `python -m appserver`.
"""

from .app import create_app
from .errors import AppServerError, BadFormError, ConfigError, InputTooLargeError, RequestError
from .server import serve
from .settings import AppServerSettings

__all__ = (
    "AppServerError",
    "AppServerSettings",
    "BadFormError",
    "ConfigError",
    "InputTooLargeError",
    "RequestError",
    "create_app",
    "serve",
)
