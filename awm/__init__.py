"""awm: Agent World Model environments as one Docker image per scenario, and the runtime to run them.

The packages, from the bottom up:

    awm.core      errors, labels, naming, settings, file writes, the version (imports nothing above)
    awm.builder   catalog (read AWM data), build (images), ship (registries, tarballs), synth (`awm gen`)
    awm.runtime   backends, `Env`, pools, clients, testcontainers module (never imports awm.builder)
    awm.cli       the `awm` command line, one thin call per command

The in-container server (`awm_server`) is baked into the base image from `awm/images/base/`; it
imports nothing of `awm`.
"""

__version__ = "0.2.0"
