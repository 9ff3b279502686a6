"""The real server as a subprocess, under the name the tests use."""

from service.process import ServerProcess as LiveServer
from service.process import free_port

__all__ = ["LiveServer", "free_port"]
