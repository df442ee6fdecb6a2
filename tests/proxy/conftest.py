"""Fixtures shared by the proxy tests."""

from __future__ import annotations

import pytest

from tests.support.certificates import TestCertificateAuthority


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCertificateAuthority:
    """A test certificate authority of the module's own: its root, its intermediate."""
    return TestCertificateAuthority(tmp_path_factory.mktemp("pki"))
