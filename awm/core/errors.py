"""The one error tree of the project. Split by what the caller can do about it.

    AWMError
    ├── DatasetError            the dataset folder cannot be read at all (missing, empty)
    ├── ScenarioNotFound        no such scenario in the dataset or catalog
    ├── SeedError               a seed statement failed in strict mode
    ├── ImageBuildError         building an image failed
    ├── ImageNotFound           the image is not in the engine; build it first
    ├── BackendUnavailable      no Docker engine / Kubernetes API to talk to
    ├── EnvStartTimeout         the environment did not become ready in time
    ├── EnvUnavailable          a running environment stopped answering (crashed, killed)
    ├── ResetError              an in-place reset failed
    ├── VerifierError           a verifier could not be run (not: it said "others")
    └── SynthesisError          an LLM stage failed after its retries

Every error carries the scenario (and image or container) it is about, when there is one, so a
batch can report it and move on.
"""

from __future__ import annotations

__all__ = [
    "AWMError",
    "BackendUnavailable",
    "DatasetError",
    "EnvStartTimeout",
    "EnvUnavailable",
    "ImageBuildError",
    "ImageNotFound",
    "ResetError",
    "ScenarioNotFound",
    "SeedError",
    "SynthesisError",
    "VerifierError",
]


class AWMError(Exception):
    """Base of every error this project raises on purpose."""

    def __init__(
        self,
        message: str,
        *,
        scenario: str | None = None,
        image: str | None = None,
        container_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.scenario = scenario
        self.image = image
        self.container_id = container_id


class DatasetError(AWMError):
    pass


class ScenarioNotFound(AWMError):
    pass


class SeedError(AWMError):
    pass


class ImageBuildError(AWMError):
    pass


class ImageNotFound(AWMError):
    pass


class BackendUnavailable(AWMError):
    pass


class EnvStartTimeout(AWMError):
    pass


class EnvUnavailable(AWMError):
    pass


class ResetError(AWMError):
    pass


class VerifierError(AWMError):
    pass


class SynthesisError(AWMError):
    pass
