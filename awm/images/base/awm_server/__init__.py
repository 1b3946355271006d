"""The server that runs inside every environment container (and its verifier sandbox).

`sandbox` uses the standard library only, so the host-side tool can grade with it too.
"""

__version__ = "0.1.0"
