"""Render a `ScenarioBundle` into a build context: the scenario's files and its Dockerfile.

The image tag is a digest of everything that goes into the image (the scenario files, the base
image tag, the template), so an unchanged scenario maps to an image that already exists. The seed
database enters it by what makes it (`awm.builder.catalog.seed.seed_digest`: its SQL, settings
and format version), not by its bytes: `plan` knows the tag without running any SQL, and only a
scenario whose image is missing pays for its seed (`ScenarioPlan.render`). For such a cached
image the seed's counts are in its labels, the rest in its manifest.
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
from functools import cache
from pathlib import Path

import jinja2

from awm import __version__
from awm.builder.catalog.models import ScenarioBundle, SeedStats
from awm.builder.catalog.seed import SeedLimits, build_seed, seed_digest
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

__all__ = ["BuildContext", "ScenarioPlan", "dockerfile_word", "plan", "render"]

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


@cache
def _template() -> tuple[str, jinja2.Template]:
    """The Dockerfile template's text (part of the digest) and its compiled form."""
    text = (TEMPLATES / "scenario.Dockerfile.j2").read_text()
    env = jinja2.Environment(keep_trailing_newline=True, autoescape=False, undefined=jinja2.StrictUndefined)
    env.filters["label"] = dockerfile_word
    return text, env.from_string(text)


@dataclass
class ScenarioPlan:
    """A scenario's image before its seed is built: its digest and every file but the seed's.

    `files` holds neither seed.db nor manifest.json nor the Dockerfile; `manifest` has a
    placeholder seed summary (the digest never covers it) until `render` builds the seed.
    """

    bundle: ScenarioBundle
    base_image: str
    foreign_keys: bool
    strict: bool
    digest: str
    files: dict[str, bytes]
    manifest: ScenarioManifest
    labels: dict[str, str]

    @property
    def tag(self) -> str:
        return image_ref(self.bundle.id, self.digest)

    def render(self, limits: SeedLimits | None = None) -> BuildContext:
        """Build the seed (in the SQL sandbox) and complete the build context.

        Raises:
            SeedError: the seed SQL was stopped, or in strict mode a statement failed.
        """
        with tempfile.TemporaryDirectory(prefix="awm-render-") as tmp:
            seed_path = Path(tmp) / "seed.db"
            stats = build_seed(self.bundle, seed_path, foreign_keys=self.foreign_keys, strict=self.strict,
                               limits=limits)
            seed = seed_path.read_bytes()
        files = {**self.files, f"{CONTEXT_DIR}/{SEED_FILE}": seed}
        manifest = self.manifest.model_copy(update={"seed": SeedSummary(
            foreign_keys=stats.foreign_keys,
            tables=stats.tables,
            rows=stats.rows,
            bytes=len(seed),
            failed_statements=list(stats.failed),
        )})
        files[f"{CONTEXT_DIR}/{MANIFEST_FILE}"] = _json(manifest.model_dump(mode="json"))
        own = sum(len(v) for k, v in files.items() if k.startswith(f"{CONTEXT_DIR}/"))
        labels = {
            **self.labels,
            L.LABEL_SEED_FAILED: str(len(stats.failed)),
            L.LABEL_SEED_TABLES: str(stats.tables),
            L.LABEL_SEED_ROWS: str(stats.total_rows),
            L.LABEL_SCENARIO_BYTES: str(own),
        }
        _, template = _template()
        files["Dockerfile"] = template.render(
            base_image=self.base_image, context_dir=CONTEXT_DIR, scenario_dir=SCENARIO_DIR, labels=labels
        ).encode()
        return BuildContext(scenario=self.bundle.id, digest=self.digest, files=files, seed_stats=stats,
                            manifest=manifest)


def plan(
    bundle: ScenarioBundle,
    base_image: str,
    *,
    foreign_keys: bool = True,
    strict: bool = False,
) -> ScenarioPlan:
    """Everything about a scenario's image that is known without running its seed SQL."""
    verifiers = {
        flavour: {str(idx): {"function": v.function, "code": v.code} for idx, v in by_task.items()}
        for flavour, by_task in bundle.verifiers.items()
    }
    files = {
        f"{CONTEXT_DIR}/{MODULE_FILE}": bundle.env_code.encode(),
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
        seed=SeedSummary(foreign_keys=foreign_keys, tables=0, rows={}, bytes=0, failed_statements=[]),
        problems=[str(p) for p in bundle.problems],
        source_digest=source_digest,
        versions=Versions(awm=__version__, base_image=base_image, sqlite=sqlite3.sqlite_version),
    )
    hasher = hashlib.sha256(base_image.encode())
    for name in sorted(files):
        hasher.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    seed_key = seed_digest(bundle, foreign_keys=foreign_keys, strict=strict)
    hasher.update(f"{CONTEXT_DIR}/{SEED_FILE}".encode() + b"\0" + bytes.fromhex(seed_key))
    # The manifest without what the seed's run or the digest itself puts in it.
    hasher.update(_json(manifest.model_dump(mode="json", exclude={"image_digest", "seed"})))
    text, _ = _template()
    hasher.update(text.encode())
    digest = hasher.hexdigest()[:16]
    manifest = manifest.model_copy(update={"image_digest": digest})
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
    }
    return ScenarioPlan(bundle=bundle, base_image=base_image, foreign_keys=foreign_keys, strict=strict,
                        digest=digest, files=files, manifest=manifest, labels=labels)


def render(
    bundle: ScenarioBundle,
    base_image: str,
    *,
    foreign_keys: bool = True,
    strict: bool = False,
) -> BuildContext:
    """Render a scenario into a build context for `base_image` (`plan`, then its seed).

    Raises:
        SeedError: the seed SQL was stopped, or in strict mode a statement failed.
    """
    return plan(bundle, base_image, foreign_keys=foreign_keys, strict=strict).render()
