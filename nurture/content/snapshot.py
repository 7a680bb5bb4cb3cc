"""A workspace's sequences and templates as plain files, from disk or from a git ref,
and a catalog loaded back from such files: what `nurture plan` compares."""

from __future__ import annotations

import hashlib
import subprocess
import tempfile
from pathlib import Path

from nurture.content.sequences import Catalog, Sequence, load_catalog
from nurture.errors import NurtureError

#: Where a workspace keeps what a sequence is made of, relative to its root.
SEQUENCES = "sequences"
TEMPLATES = "templates/email"
#: The layout every email is wrapped in: part of each sequence's recorded version.
LAYOUT_FILES = (f"{TEMPLATES}/_layout.html", f"{TEMPLATES}/_layout.txt")


def sequence_files(root: Path, seq: Sequence) -> dict[str, str]:
    """The sequence's file, the templates its steps and their variants use (HTML and the
    text twin when there is one) and the layout, by path relative to `root`: what a recorded version
    keeps, so a layout edit is a change too."""
    templates = {step.template for step in seq.steps} | {
        v.template for step in seq.steps for v in step.variants if v.template
    }
    paths = {seq.path, *LAYOUT_FILES} | {
        f"{TEMPLATES}/{t}{ext}" for t in templates for ext in (".html", ".txt")
    }
    return {
        p: (root / p).read_text(encoding="utf-8") for p in sorted(paths) if (root / p).is_file()
    }


def fingerprint(files: dict[str, str]) -> str:
    """sha256 over paths and contents in path order: equal files, equal hash."""
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(path.encode() + b"\0" + files[path].encode() + b"\0")
    return digest.hexdigest()


def catalog_from_files(files: dict[str, str]) -> Catalog:
    """Load a catalog from files kept elsewhere (the database, a git ref) by writing them
    to a throw-away folder: the very loader `send-due` uses, so both sides parse alike."""
    with tempfile.TemporaryDirectory(prefix="nurture-plan-") as tmp:
        root = Path(tmp)
        (root / SEQUENCES).mkdir()
        for rel, text in files.items():
            target = root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        return load_catalog(root / SEQUENCES)


def _git(workspace: Path, *args: str) -> str:
    try:
        done = subprocess.run(["git", "-C", str(workspace), *args], capture_output=True,
                              text=True, check=False)  # fmt: skip
    except FileNotFoundError:
        raise NurtureError("git is not installed: --since needs it") from None
    if done.returncode != 0:
        raise NurtureError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else
                           f"git {args[0]} failed")  # fmt: skip
    return done.stdout


def files_at_ref(workspace: Path, ref: str) -> dict[str, str]:
    """The workspace's sequence and template files as they were at git `ref`, by path
    relative to the workspace (read with `git show REF:path`)."""
    try:
        top = Path(_git(workspace, "rev-parse", "--show-toplevel").strip())
    except NurtureError:
        raise NurtureError(f"{workspace} is not in a git repository: --since needs one") from None
    try:
        _git(workspace, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    except NurtureError:
        raise NurtureError(f"unknown git ref {ref!r}") from None
    prefix = workspace.resolve().relative_to(top.resolve()).as_posix()
    prefix = "" if prefix == "." else prefix + "/"
    listed = _git(top, "ls-tree", "-r", "--name-only", ref, "--",
                  f"{prefix}{SEQUENCES}", f"{prefix}{TEMPLATES}")  # fmt: skip
    files: dict[str, str] = {}
    for path in listed.splitlines():
        rel = path.removeprefix(prefix)
        if rel.startswith(f"{SEQUENCES}/") and not rel.endswith((".yaml", ".yml")):
            continue
        files[rel] = _git(top, "show", f"{ref}:{path}")
    return files


def workspace_files(root: Path, catalog: Catalog) -> dict[str, dict[str, str]]:
    """Each sequence's files (see `sequence_files`), by sequence name."""
    return {name: sequence_files(root, seq) for name, seq in catalog.sequences.items()}
