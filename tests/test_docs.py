"""The README and docs stay true to the tree: every relative link and anchor resolves, every repository path
they name exists, every doc is reachable from the README, and the README stays a door, not a manual."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([ROOT / "README.md", ROOT / "CONTRIBUTING.md", ROOT / "manifests" / "README.md",
               *(ROOT / "docs").glob("*.md")])
README_MAX_BYTES = 12 * 1024

FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
CODE_SPAN = re.compile(r"`([^`\n]+)`")
# A code span naming something in the repository: a path under one of its top-level folders.
TOP_LEVEL = "crnn|components|pipelines|tests|bench|tools|images|manifests|docs"
REPO_PATH = re.compile(rf"(?<![\w./:-])(?:{TOP_LEVEL})/[\w./{{}},*-]*")


def _prose(doc: Path) -> str:
    """The text outside fenced code blocks (commands there name what a user types, not files of ours)."""
    return FENCE.sub("", doc.read_text())


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(doc: Path) -> set[str]:
    return {_slug(line.lstrip("#")) for line in _prose(doc).splitlines() if re.match(r"#{1,6} ", line)}


def _expand(pattern: str) -> list[str]:
    """``a/{b,c}.py`` -> ``a/b.py``, ``a/c.py`` (the shorthand the docs use for sibling files)."""
    parts = re.split(r"\{([^}]*)\}", pattern)
    choices = [[part] if i % 2 == 0 else part.split(",") for i, part in enumerate(parts)]
    return ["".join(combo) for combo in itertools.product(*choices)]


def _links(doc: Path) -> list[str]:
    return [target for target in LINK.findall(_prose(doc)) if not re.match(r"[a-z][a-z0-9+.-]*:", target)]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_and_anchors_resolve(doc):
    broken = []
    for target in _links(doc):
        path, _, anchor = target.partition("#")
        dest = (doc.parent / path).resolve() if path else doc
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target}: no heading with the anchor #{anchor} in {dest.relative_to(ROOT)}")
    assert not broken, f"{doc.relative_to(ROOT)}: " + "; ".join(broken)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_repository_paths_named_in_code_spans_exist(doc):
    missing = []
    for span in CODE_SPAN.findall(_prose(doc)):
        for found in REPO_PATH.findall(span) if "<" not in span else []:
            name = found.rstrip(".,")
            for path in _expand(name):
                if not (list(ROOT.glob(path)) if "*" in path else (ROOT / path).exists()):
                    missing.append(path)
    assert not missing, f"{doc.relative_to(ROOT)} names paths that do not exist: {sorted(set(missing))}"


def test_every_doc_is_linked_from_the_readme():
    linked = {(ROOT / target.partition("#")[0]).resolve() for target in _links(ROOT / "README.md")}
    orphans = [str(doc.relative_to(ROOT)) for doc in DOCS if doc.parent.name == "docs" and doc not in linked]
    assert not orphans, f"docs the README does not link to: {orphans}"


def test_readme_is_a_door():
    readme = (ROOT / "README.md").read_text()
    size = len(readme.encode())
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes (at most {README_MAX_BYTES}): move details to docs/"
    first_block = FENCE.search(readme).group(0)
    assert "make run" in first_block and "make test" in first_block, "the first command block: make run, make test"


def test_the_checks_find_what_is_broken(tmp_path):
    """The link and path checks above are not vacuous: they see a broken link, anchor and path."""
    doc = tmp_path / "doc.md"
    doc.write_text("# Title\n\n[ok](#title) [gone](missing.md) [bad anchor](#nowhere) `crnn/no_such_module.py`\n"
                   "```\n[in a fence](ignored.md) `crnn/ignored.py`\n```\n")
    assert _links(doc) == ["#title", "missing.md", "#nowhere"]
    assert _anchors(doc) == {"title"}
    assert REPO_PATH.findall(" ".join(CODE_SPAN.findall(_prose(doc)))) == ["crnn/no_such_module.py"]
    assert _expand("crnn/data/{fetch,extract}.py") == ["crnn/data/fetch.py", "crnn/data/extract.py"]
    assert _slug("Runbook: from an empty cluster to a `model`") == "runbook-from-an-empty-cluster-to-a-model"
