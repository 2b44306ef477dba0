"""Session fixtures of the deployment checks: every kustomization rendered once."""

from __future__ import annotations

import pytest
import yaml
from deploy_helpers import RENDERED_DIRS, render


@pytest.fixture(scope="session")
def rendered() -> dict[str, str]:
    """Rendered YAML text of every kustomization users apply, by directory."""
    return {directory: render(directory) for directory in RENDERED_DIRS}


@pytest.fixture(scope="session")
def rendered_docs(rendered: dict[str, str]) -> list[tuple[str, dict]]:
    """(directory, resource) for every rendered resource."""
    return [(d, doc) for d, text in rendered.items() for doc in yaml.safe_load_all(text) if doc]
