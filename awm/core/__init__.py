"""The neutral core below `awm.builder` and `awm.runtime`: errors, labels, naming, settings, files.

It imports nothing of the rest of the package, so every layer can depend on it.
"""
