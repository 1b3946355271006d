"""Every expected failure of `awm`: one `error:` line, at most one `hint:` line, its family's exit code."""

from __future__ import annotations

import gc
import http.server
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from typer.testing import CliRunner

from awm.cli import app
from awm.core.cli import print_error
from awm.core.errors import (
    AWMError,
    BackendUnavailable,
    DatasetError,
    EngineError,
    EnvError,
    EnvStartTimeout,
    EnvUnavailable,
    ImageNotFound,
    InvalidInput,
    InvalidURL,
    ScenarioNotFound,
    SynthesisError,
)
from tests.helpers import EXAMPLES, free_port

runner = CliRunner()


@pytest.fixture
def no_engine() -> Iterator[dict[str, str]]:
    """DOCKER_HOST pointing at a missing socket."""
    # docker-py leaves the socket of a failed unix connect to the garbage collector, whose
    # ResourceWarning would fail whatever runs then: collect them here, quietly.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        yield {"DOCKER_HOST": "unix:///nonexistent.sock"}
        gc.collect()


def _fails(args: list[str], exit_code: int, env: dict[str, str] | None = None) -> tuple[str, str | None]:
    """The error line and hint line of a command that must fail as an expected failure."""
    result = runner.invoke(app, args, env=env)
    output = result.output
    assert result.exit_code == exit_code, output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in output
    lines = output.splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    hints = [line for line in lines if line.startswith("hint: ")]
    assert len(errors) == 1, output
    assert len(hints) <= 1, output
    return errors[0], hints[0] if hints else None


def test_each_family_has_its_own_exit_code() -> None:
    families = [InvalidInput, DatasetError, AWMError, EngineError, EnvError, SynthesisError]
    codes = [f.exit_code for f in families]
    assert len(set(codes)) == len(codes)
    assert 0 not in codes
    assert (ScenarioNotFound.exit_code, ImageNotFound.exit_code, EnvUnavailable.exit_code) == (
        DatasetError.exit_code, EngineError.exit_code, EnvError.exit_code)
    error = ImageNotFound("image x not found", image="x", hint="build it")
    assert (error.image, error.hint, str(error)) == ("x", "build it", "image x not found")
    assert BackendUnavailable("no engine").hint  # the class's default next step


# -- engine ---------------------------------------------------------------------------------


def test_env_ls_without_an_engine(no_engine: dict[str, str]) -> None:
    error, hint = _fails(["env", "ls"], BackendUnavailable.exit_code, env=no_engine)
    assert "no Docker engine answers at unix:///nonexistent.sock" in error
    assert hint is not None
    assert "DOCKER_HOST" in hint


def test_build_without_an_engine(tmp_path: Path, no_engine: dict[str, str]) -> None:
    error, _ = _fails(["build", str(EXAMPLES), "--report", str(tmp_path / "report.json")],
                      BackendUnavailable.exit_code, env=no_engine)
    assert "no Docker engine answers at unix:///nonexistent.sock" in error


@pytest.mark.docker
def test_env_start_of_a_missing_image(docker_client: docker.DockerClient) -> None:
    error, hint = _fails(["env", "start", "awm/nope:none"], ImageNotFound.exit_code)
    assert error == "error: image awm/nope:none not found; build it with `awm build DATASET --only nope`"
    assert hint is not None
    assert "awm images ls" in hint


# -- awm env check --------------------------------------------------------------------------


@pytest.fixture
def not_found_server() -> Iterator[str]:
    """A tiny HTTP server that answers 404 to everything."""

    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_error(404)

        do_POST = do_DELETE = do_GET

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/mcp"
    server.shutdown()
    server.server_close()


def test_env_check_on_an_unreachable_url() -> None:
    url = f"http://127.0.0.1:{free_port()}/mcp"
    error, hint = _fails(["env", "check", url], EnvUnavailable.exit_code)
    assert error.startswith(f"error: listing tools on {url} failed: the environment does not answer (ConnectError")
    assert hint is not None


def test_env_check_on_a_404_url(not_found_server: str) -> None:
    error, hint = _fails(["env", "check", not_found_server], EnvUnavailable.exit_code)
    assert error == f"error: listing tools on {not_found_server} failed: it answered HTTP 404 Not Found, not MCP"
    assert hint == "hint: an environment's MCP endpoint is its address + /mcp"


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("127.0.0.1:8000/mcp", "is not an http:// or https:// URL"),
        ("localhost/mcp", "is not an http:// or https:// URL"),
        ("http://[::1/mcp", "is not a valid URL"),
        ("http:///mcp", "names no host"),
    ],
)
def test_env_check_on_a_malformed_url(url: str, why: str) -> None:
    error, hint = _fails(["env", "check", url], InvalidURL.exit_code)
    assert error.startswith(f"error: {url!r} {why}")
    assert hint == f"hint: {InvalidURL.default_hint}"


# -- dataset --------------------------------------------------------------------------------


def test_catalog_of_a_file(tmp_path: Path) -> None:
    some_file = tmp_path / "some_file"
    some_file.write_text("not a dataset\n")
    error, hint = _fails(["catalog", str(some_file)], DatasetError.exit_code)
    assert error == f"error: dataset folder {some_file} is a file, not a folder"
    assert hint is not None
    assert "gen_*.jsonl" in hint


def test_build_of_an_unknown_scenario(tmp_path: Path) -> None:
    error, hint = _fails(["build", str(EXAMPLES), "--only", "nope", "--report", str(tmp_path / "r.json")],
                         ScenarioNotFound.exit_code)
    assert error.startswith(f"error: scenario 'nope' is not in {EXAMPLES}")
    assert hint is not None
    assert "awm catalog" in hint


def test_seed_of_an_unknown_scenario(tmp_path: Path) -> None:
    error, _ = _fails(["seed", str(EXAMPLES), "-o", str(tmp_path), "--only", "nope"], ScenarioNotFound.exit_code)
    assert error.startswith("error: scenario 'nope' is not in")


# -- usage, --debug, bugs -------------------------------------------------------------------


@pytest.mark.parametrize(
    "args", [["env", "stop"], ["env", "stop", "x", "--all"], ["env", "stop", "--all-owners"], ["catalog"], ["--nope"]]
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output


def test_debug_prints_the_traceback_and_keeps_the_exit_code(tmp_path: Path) -> None:
    some_file = tmp_path / "f"
    some_file.write_text("")
    result = runner.invoke(app, ["--debug", "catalog", str(some_file)])
    assert result.exit_code == DatasetError.exit_code
    assert "Traceback (most recent call last)" in result.output
    assert f"error: dataset folder {some_file} is a file, not a folder" in result.output


def test_a_multi_line_message_prints_its_first_line_unless_debug(capsys: pytest.CaptureFixture[str]) -> None:
    error = EnvStartTimeout("environment x exited with code 1; last log lines:\nboom\nmore")
    print_error(error)
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["error: environment x exited with code 1; last log lines:",
                     f"hint: {EnvStartTimeout.default_hint}"]
    print_error(error, debug=True)
    assert "boom\nmore" in capsys.readouterr().err


def test_a_bug_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr("awm.cli.catalog.load_catalog", broken)
    result = runner.invoke(app, ["catalog", str(tmp_path)])
    assert isinstance(result.exception, ZeroDivisionError)  # not swallowed into an error line
    assert "error:" not in result.output
