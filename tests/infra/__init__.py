"""Real-component test infrastructure: a private dockerd, registries, Compose v2 and an SSH fleet.

The pytest plugin lives in `tests.infra.fixtures`; everything else here is plain Python that the
fixtures compose, so a test (or a debugging session) can also use the pieces directly.
"""
