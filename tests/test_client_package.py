"""The SDK's public surface: what it exports, sync/async parity, and what it imports."""

from __future__ import annotations

import inspect
import subprocess
import sys
from types import ModuleType

import pytest

import logharbor
import logharbor.client
from logharbor import AsyncLogClient, LogClient


def public_names(module: ModuleType) -> set[str]:
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and not isinstance(value, ModuleType)
    }


@pytest.mark.parametrize("module", [logharbor, logharbor.client], ids=lambda m: m.__name__)
def test_all_lists_exactly_the_public_names(module: ModuleType) -> None:
    assert set(module.__all__) - {"__version__"} == public_names(module)


def test_the_top_level_package_re_exports_the_sdk() -> None:
    sdk_only = {"CompressionInput", "CursorStart", "PairsInput", "ShardStatus"}  # type aliases

    assert set(logharbor.client.__all__) - sdk_only <= set(logharbor.__all__)
    assert logharbor.__version__ == "0.1.0"


def client_methods(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in vars(cls).items()
        if callable(member) and not name.startswith("_")
    }


def test_the_async_client_mirrors_every_method_of_the_sync_client() -> None:
    sync, asynchronous = client_methods(LogClient), client_methods(AsyncLogClient)

    assert sync.keys() == asynchronous.keys()
    for name, signature in sync.items():
        assert list(signature.parameters.values()) == list(
            asynchronous[name].parameters.values()
        ), name


def test_every_async_client_operation_is_a_coroutine_or_an_async_iterator() -> None:
    for name in client_methods(AsyncLogClient):
        method = getattr(AsyncLogClient, name)
        assert inspect.iscoroutinefunction(method) or inspect.isasyncgenfunction(method), name


def test_the_sdk_never_imports_the_server_or_the_engine() -> None:
    script = (
        "import sys, logharbor, logharbor.client\n"
        "print(' '.join(m for m in sys.modules if m.startswith('logharbor')))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout.split()

    assert "logharbor.client" in loaded
    assert not [m for m in loaded if m.startswith(("logharbor.server", "logharbor.engine"))]
