"""Hypothesis profiles: the default run is derandomized so CI is reproducible (a property test that fails
fails every time, with the same example); ``--hypothesis-profile=explore`` draws fresh random examples,
ten times as many, to hunt for new counterexamples locally."""

from hypothesis import settings

settings.register_profile("default", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False, max_examples=1000, print_blob=True)
settings.load_profile("default")
