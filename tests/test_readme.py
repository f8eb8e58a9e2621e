"""The README is a front door for users: short, every link and picture resolves, its commands are the ones CI
runs, and its picture is one the repository may hold."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app_support import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.DOTALL)
    return {_slug(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}


def _links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.DOTALL)
    return LINK.findall(text)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_link_and_image_resolves(doc: Path) -> None:
    links = _links(doc)
    assert doc.name != "README.md" or links, "the README links nowhere"
    for target in links:
        if re.match(r"^[a-z]+://", target):
            assert target.startswith("https://"), target
            continue
        path, _, anchor = target.partition("#")
        resolved = (doc.parent / path).resolve() if path else doc
        assert resolved.exists(), f"{doc.name}: {target} does not exist"
        assert resolved.is_relative_to(REPO), f"{doc.name}: {target} points outside the repository"
        if anchor:
            assert anchor in _anchors(resolved), f"{doc.name}: no heading for #{anchor} in {resolved.name}"


def test_readme_is_short_and_shows_the_app() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 150
    images = [target for target in LINK.findall(text) if target.endswith(".png")]
    assert images, "the README has no picture of the app"
    for image in images:
        data = (REPO / image).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) < 2_000_000
    assert "python -m review_app.screenshot docs/images/review-app.png" in text  # the one command that made it


def test_readme_set_up_is_what_ci_runs() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert "pip install -e . && python app.py" in readme
    assert 'pip install -e ".[test]" && python -m pytest' in readme
    assert re.search(r"^python -m pytest$", ci, flags=re.MULTILINE)
    assert "--index-url https://download.pytorch.org/whl/cpu" in readme  # CPU-only machines: no 5 GB of CUDA


def test_pictures_in_the_repository_are_ours() -> None:
    """No radiograph from elsewhere is committed: the only pictures are the README's synthetic screenshots."""
    pictures = [p for p in (REPO / "docs").rglob("*") if p.suffix.lower() in {".png", ".jpg", ".jpeg", ".dcm"}]
    assert {p.relative_to(REPO).as_posix() for p in pictures} <= {"docs/images/review-app.png"}
