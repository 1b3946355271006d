"""The one error tree of the project: a family per part, a class per fault the caller can act on.

    AWMError                      1  anything else this project raises on purpose
    ├── InvalidInput              2  a value given to a command or function is malformed
    │   └── InvalidURL               not an http(s) URL with a host
    ├── DatasetError              3  the dataset folder cannot be read at all (missing, a file, empty)
    │   ├── ScenarioNotFound         no such scenario in the dataset or catalog
    │   └── SeedError                a seed could not be built (a limit stopped it, or --strict)
    ├── BuildError                4  building images failed as a whole
    │   └── ImageBuildError          building one image (or the base image) failed
    ├── EngineError               5  the Docker engine (or cluster) refused or failed a request
    │   ├── BackendUnavailable       no Docker engine / Kubernetes API to talk to
    │   └── ImageNotFound            the image is not in the engine; build it first
    ├── EnvError                  6  an environment (a running server) failed
    │   ├── EnvNotFound              no environment by that name, id or scenario
    │   ├── EnvStartTimeout          it did not become ready in time (or exited while starting)
    │   ├── EnvUnavailable           it stopped answering (crashed, killed, removed), or never did
    │   ├── ResetError               an in-place reset failed
    │   ├── VerifierError            a verifier could not be run (not: it said "others")
    │   └── ToolCallError            the MCP server refused a tool call (unknown tool, bad arguments)
    └── SynthesisError            7  an LLM stage failed after its retries

The number is the family's `exit_code`: what `awm` exits with when the error ends a command
(0 success, 1 the command ran but its outcome is a failure, e.g. a scenario failed to build,
2 usage, 130 interrupted). A first-level class may be raised itself when no finer one fits.

Every error carries the facts it is about, when there are some (scenario, image, container
id, URL, path, tool), so a batch can report it and move on, and a `hint`: the next step for
the person reading it (a class default, or one given where it is raised).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

__all__ = [
    "AWMError",
    "BackendUnavailable",
    "BuildError",
    "DatasetError",
    "EngineError",
    "EnvError",
    "EnvNotFound",
    "EnvStartTimeout",
    "EnvUnavailable",
    "ImageBuildError",
    "ImageNotFound",
    "InvalidInput",
    "InvalidURL",
    "ResetError",
    "ScenarioNotFound",
    "SeedError",
    "SynthesisError",
    "ToolCallError",
    "VerifierError",
]


class AWMError(Exception):
    """Base of every error this project raises on purpose.

    Args:
        message: what went wrong, naming the thing it happened to; the first line is what
            the command line prints.
        hint: the next step for the user; the class's default when None.
        scenario, image, container_id, url, path, tool: what the error is about.
    """

    exit_code: ClassVar[int] = 1
    default_hint: ClassVar[str | None] = None

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        scenario: str | None = None,
        image: str | None = None,
        container_id: str | None = None,
        url: str | None = None,
        path: str | Path | None = None,
        tool: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else self.default_hint
        self.scenario = scenario
        self.image = image
        self.container_id = container_id
        self.url = url
        self.path = None if path is None else Path(path)
        self.tool = tool


# -- input ----------------------------------------------------------------------------------


class InvalidInput(AWMError, ValueError):
    exit_code = 2


class InvalidURL(InvalidInput):
    default_hint = "give a full URL with scheme and host, e.g. http://127.0.0.1:8000/mcp"


# -- dataset --------------------------------------------------------------------------------


class DatasetError(AWMError):
    exit_code = 3
    default_hint = "a dataset is a folder of gen_*.jsonl files, e.g. the project's examples/"


class ScenarioNotFound(DatasetError):
    default_hint = "`awm catalog DATASET` lists the scenarios and why any were excluded"


class SeedError(DatasetError):
    default_hint = "`awm catalog DATASET` shows the failing statements; without --strict they are skipped"


# -- build ----------------------------------------------------------------------------------


class BuildError(AWMError):
    exit_code = 4


class ImageBuildError(BuildError):
    pass


# -- engine ---------------------------------------------------------------------------------


class EngineError(AWMError):
    exit_code = 5


class BackendUnavailable(EngineError):
    default_hint = "start a Docker engine (`make docker` does it as root on Debian) or point DOCKER_HOST at one"


class ImageNotFound(EngineError):
    default_hint = "`awm build DATASET --only SCENARIO` builds it; `awm images ls` lists what is there"


# -- environments ---------------------------------------------------------------------------


class EnvError(AWMError):
    exit_code = 6


class EnvNotFound(EnvError):
    default_hint = "`awm env ls` lists the environments"


class EnvStartTimeout(EnvError):
    default_hint = "`awm --debug ...` prints the container's last log lines"


class EnvUnavailable(EnvError):
    default_hint = "`awm env ls` lists the environments and their state, `awm env logs NAME` says why one stopped"


class ResetError(EnvError):
    pass


class VerifierError(EnvError):
    pass


class ToolCallError(EnvError):
    default_hint = "`awm env check URL` lists the tools and their arguments"


# -- synthesis ------------------------------------------------------------------------------


class SynthesisError(AWMError):
    exit_code = 7
