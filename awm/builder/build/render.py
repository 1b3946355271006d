"""Render a `ScenarioBundle` into a build context: the scenario's files and its Dockerfile.

The image tag is a digest of everything that goes into the image (the scenario files and the
base image tag), so an unchanged scenario maps to an image that already exists.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import sqlite3
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import jinja2

from awm import __version__
from awm.builder.catalog.models import ScenarioBundle, SeedStats
from awm.builder.catalog.seed import build_seed
from awm.core import labels as L
from awm.core.naming import image_ref, image_repo
from awm_server.contract import (
    CONTEXT_DIR,
    MANIFEST_FILE,
    MODULE_FILE,
    SCENARIO_DIR,
    SEED_FILE,
    TASKS_FILE,
    VERIFIERS_FILE,
    ScenarioManifest,
    SeedSummary,
    ToolRoute,
    Versions,
)

__all__ = ["BuildContext", "dockerfile_word", "render"]

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def dockerfile_word(value: str) -> str:
    r"""`value` as one double-quoted Dockerfile word that the builder reads back unchanged.

    Inside double quotes the builder expands `$VAR` and `${VAR}` and drops the backslash of
    `\\`, `\"` and `\$` only, so those three are escaped and everything else is literal (JSON's
    `\u003c` escapes would stay in the label as typed). A line break would end the instruction:
    control characters become spaces.
    """
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
    return '"' + _CONTROL.sub(" ", escaped) + '"'


@dataclass
class BuildContext:
    """A rendered build context, in memory: file name -> bytes, plus what the image will be."""

    scenario: str
    digest: str
    files: dict[str, bytes]
    seed_stats: SeedStats
    manifest: ScenarioManifest

    @property
    def tag(self) -> str:
        return image_ref(self.scenario, self.digest)

    @property
    def scenario_bytes(self) -> int:
        return sum(len(v) for k, v in self.files.items() if k.startswith(f"{CONTEXT_DIR}/"))

    def tar(self) -> io.BytesIO:
        """The context as an uncompressed tar, with fixed metadata so it is reproducible."""
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for name in sorted(self.files):
                data = self.files[name]
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mode = 0o644
                info.mtime = 0
                tar.addfile(info, io.BytesIO(data))
        buf.seek(0)
        return buf

    def write(self, directory: Path) -> None:
        for name, data in self.files.items():
            path = directory / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)


def _json(value: object) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def render(
    bundle: ScenarioBundle,
    base_image: str,
    *,
    foreign_keys: bool = True,
    strict: bool = False,
) -> BuildContext:
    """Render a scenario into a build context for `base_image`.

    Raises:
        SeedError: in strict mode, when a seed statement fails.
    """
    with tempfile.TemporaryDirectory(prefix="awm-render-") as tmp:
        seed_path = Path(tmp) / "seed.db"
        stats = build_seed(bundle, seed_path, foreign_keys=foreign_keys, strict=strict)
        seed = seed_path.read_bytes()

    verifiers = {
        flavour: {str(idx): {"function": v.function, "code": v.code} for idx, v in by_task.items()}
        for flavour, by_task in bundle.verifiers.items()
    }
    files = {
        f"{CONTEXT_DIR}/{MODULE_FILE}": bundle.env_code.encode(),
        f"{CONTEXT_DIR}/{SEED_FILE}": seed,
        f"{CONTEXT_DIR}/{TASKS_FILE}": _json(bundle.tasks),
        f"{CONTEXT_DIR}/{VERIFIERS_FILE}": _json(verifiers),
    }
    # Where a record sat in its file (verifier line numbers) is not part of the scenario.
    source = bundle.model_dump(mode="json", exclude={"problems"})
    for by_task in source["verifiers"].values():
        for v in by_task.values():
            v.pop("source_file")
            v.pop("source_line")
    source_digest = hashlib.sha256(json.dumps(source, sort_keys=True).encode()).hexdigest()
    manifest = ScenarioManifest(
        scenario=bundle.id,
        name=bundle.name,
        description=bundle.description,
        tools=[ToolRoute(name=t.name, method=t.method, path=t.path) for t in bundle.tools],
        shadowed_routes=[ToolRoute(name=r.name, method=r.method, path=r.path) for r in bundle.routes if r.shadowed],
        task_count=len(bundle.tasks),
        verifiers={f: sorted(int(i) for i in by) for f, by in verifiers.items()},
        seed=SeedSummary(
            foreign_keys=stats.foreign_keys,
            tables=stats.tables,
            rows=stats.rows,
            bytes=len(seed),
            failed_statements=list(stats.failed),
        ),
        problems=[str(p) for p in bundle.problems],
        source_digest=source_digest,
        versions=Versions(awm=__version__, base_image=base_image, sqlite=sqlite3.sqlite_version),
    )
    hasher = hashlib.sha256(base_image.encode())
    for name in sorted(files):
        hasher.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    # The manifest without its own digest, in the same bytes as always (unchanged digests).
    hasher.update(_json(manifest.model_dump(mode="json", exclude={"image_digest"})))
    template = (TEMPLATES / "scenario.Dockerfile.j2").read_text()
    hasher.update(template.encode())
    digest = hasher.hexdigest()[:16]
    manifest = manifest.model_copy(update={"image_digest": digest})
    files[f"{CONTEXT_DIR}/{MANIFEST_FILE}"] = _json(manifest.model_dump(mode="json"))

    labels = {
        L.OCI_TITLE: image_repo(bundle.id),
        L.OCI_DESCRIPTION: bundle.name,
        L.OCI_VERSION: digest,
        L.OCI_BASE_NAME: base_image,
        L.LABEL_SCENARIO: bundle.id,
        L.LABEL_DIGEST: digest,
        L.LABEL_SOURCE_DIGEST: source_digest,
        L.LABEL_VERSION: __version__,
        L.LABEL_TOOLS: str(len(bundle.tools)),
        L.LABEL_TASKS: str(len(bundle.tasks)),
        L.LABEL_SEED_FAILED: str(len(stats.failed)),
    }
    env = jinja2.Environment(keep_trailing_newline=True, autoescape=False, undefined=jinja2.StrictUndefined)
    env.filters["label"] = dockerfile_word
    dockerfile = env.from_string(template).render(
        base_image=base_image, context_dir=CONTEXT_DIR, scenario_dir=SCENARIO_DIR, labels=labels
    )
    files["Dockerfile"] = dockerfile.encode()
    return BuildContext(scenario=bundle.id, digest=digest, files=files, seed_stats=stats, manifest=manifest)
