"""Hypothesis profiles: the default run is derandomized so CI is reproducible (a property test that fails
fails every time, with the same example); ``--hypothesis-profile=explore`` draws fresh random examples,
ten times as many, to hunt for new counterexamples locally. Array caches go to a temporary directory."""

import pytest
from hypothesis import settings

settings.register_profile("default", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False, max_examples=1000, print_blob=True)
settings.load_profile("default")


@pytest.fixture(autouse=True, scope="session")
def _cache_in_a_temporary_directory(tmp_path_factory):
    """``inspo train`` builds array caches and row stores; tests keep them out of the user's ~/.cache."""
    mp = pytest.MonkeyPatch()
    mp.setenv("INSPO_CACHE_DIR", str(tmp_path_factory.mktemp("inspo-cache")))
    yield
    mp.undo()
