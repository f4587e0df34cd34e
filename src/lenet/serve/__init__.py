"""`lenet serve`: draw a digit in the browser and watch every layer of a trained LeNet read it."""

from .app import create_app
from .net import listen, url, urls

__all__ = ["create_app", "listen", "url", "urls"]
