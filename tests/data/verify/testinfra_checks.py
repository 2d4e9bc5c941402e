"""A tiny testinfra file for the testinfra verify step (run by it, not collected by the test suite:
its name does not start with test_). `host` is testinfra's fixture for the host under test."""


def test_passwd_is_a_file(host):
    passwd = host.file("/etc/passwd")
    assert passwd.is_file
    assert passwd.contains("root")


def test_commands_run_on_the_host(host):
    assert host.run("echo ready").stdout.strip() == "ready"


def test_missing_file(host):
    assert host.file("/nonexistent/sparkprov-marker").exists, "the marker is missing"


def test_skipped(host):
    import pytest

    pytest.skip("not on this host")
