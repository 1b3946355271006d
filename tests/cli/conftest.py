"""Command-line tests use the example images the runtime tests build."""

from tests.runtime.conftest import images

__all__ = ["images"]
