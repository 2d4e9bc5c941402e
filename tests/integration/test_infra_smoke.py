"""Smoke tests: every real-component fixture does real work (containers, pushes, logins, SSH)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.infra.dockerd import DockerDaemon
from tests.infra.fleet import Fleet, SshHost
from tests.infra.registry import Registry, docker_login, manifest_digest, push_image


@pytest.mark.docker
def test_container_runs_from_busybox_image(dockerd: DockerDaemon, busybox_image: str) -> None:
    assert dockerd.docker("run", "--rm", busybox_image, "echo", "hi").stdout == "hi\n"


@pytest.mark.docker
def test_push_pull_and_digest_matches_repo_digests(
    dockerd: DockerDaemon, busybox_image: str, registry: Registry
) -> None:
    ref = push_image(dockerd, busybox_image, registry, "nvidia/pytorch:25.11-py3")
    dockerd.docker("rmi", ref)
    dockerd.docker("pull", ref)

    inspect = dockerd.docker("image", "inspect", "--format", "{{json .RepoDigests}}", ref)
    digest = manifest_digest(registry, "nvidia/pytorch", "25.11-py3")
    # Other tests of the session may have pushed the same image under other names too.
    assert f"{registry.url}/nvidia/pytorch@{digest}" in json.loads(inspect.stdout)


@pytest.mark.docker
def test_auth_registry_login_push_and_anonymous_pull(
    dockerd: DockerDaemon, busybox_image: str, auth_registry: Registry, tmp_path: Path
) -> None:
    assert auth_registry.username == "$oauthtoken"
    good = docker_login(dockerd, auth_registry, dockerd.client_env(tmp_path / "good"), check=False)
    assert good.returncode == 0, good.stderr
    bad_env = dockerd.client_env(tmp_path / "bad")
    bad = docker_login(dockerd, auth_registry, bad_env, password="not-the-key", check=False)
    assert bad.returncode != 0
    assert "unauthorized" in bad.stderr.lower()

    ref = push_image(dockerd, busybox_image, auth_registry, "nvidia/private:1")
    dockerd.docker("rmi", ref)
    anonymous = dockerd.docker("pull", ref, check=False)  # shared env: never logged in
    assert anonymous.returncode != 0
    assert "no basic auth credentials" in anonymous.stderr


@pytest.mark.docker
def test_compose_up_and_down(dockerd: DockerDaemon, busybox_image: str, tmp_path: Path) -> None:
    compose_file = tmp_path / "compose.yaml"
    service = {"image": busybox_image, "command": ["sleep", "300"], "init": True}
    compose_file.write_text(yaml.safe_dump({"services": {"sleeper": service}}))
    project = ("compose", "--project-name", "smoke", "--file", str(compose_file))
    label = "label=com.docker.compose.project=smoke"

    assert "v2.40.3" in dockerd.docker("compose", "version").stdout
    dockerd.docker(*project, "up", "--detach")
    try:
        states = dockerd.docker("ps", "--all", "--filter", label, "--format", "{{.State}}").stdout
        assert states.split() == ["running"]
        pid1 = dockerd.docker(*project, "exec", "-T", "sleeper", "cat", "/proc/1/cmdline").stdout
        assert pid1.startswith("/sbin/docker-init")  # init: true
    finally:
        dockerd.docker(*project, "down", "--timeout", "1")
    assert dockerd.docker("ps", "--all", "--quiet", "--filter", label).stdout == ""


@pytest.fixture(scope="module")
def fleet(ssh_fleet: Callable[[int], Fleet]) -> Fleet:
    return ssh_fleet(3)


def _hostname_over_paramiko(fleet: Fleet, host: SshHost) -> str:
    paramiko = pytest.importorskip("paramiko")
    client = paramiko.SSHClient()
    client.load_host_keys(str(fleet.known_hosts_file))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        host.ip,
        host.port,
        username="root",
        key_filename=str(fleet.client_key),
        look_for_keys=False,
        allow_agent=False,
    )
    try:
        _, stdout, _ = client.exec_command("hostname")
        return str(stdout.read().decode()).strip()
    finally:
        client.close()


def _hostname_over_openssh(fleet: Fleet, host: SshHost) -> str:
    return fleet.ssh(host, "hostname").stdout.strip()


@pytest.mark.fleet
@pytest.mark.parametrize(
    "hostname", [_hostname_over_openssh, _hostname_over_paramiko], ids=["openssh", "paramiko"]
)
def test_fleet_hosts_answer_with_strict_host_keys(
    fleet: Fleet, hostname: Callable[[Fleet, SshHost], str]
) -> None:
    assert [hostname(fleet, host) for host in fleet.hosts] == ["h1", "h2", "h3"]


@pytest.mark.fleet
def test_fleet_rejects_a_wrong_host_key(fleet: Fleet) -> None:
    h1, h2 = fleet.hosts[:2]
    fleet.known_hosts_file.write_text(f"{h1.ip} {h2.host_key_pub}\n{h2.ip} {h2.host_key_pub}\n")
    try:
        refused = fleet.ssh(h1, "true", check=False)
        assert refused.returncode == 255
        assert "Host key verification failed" in refused.stderr
    finally:
        fleet.known_hosts_file.write_text("".join(f"{h.ip} {h.host_key_pub}\n" for h in fleet.hosts))


@pytest.mark.fleet
def test_fleet_inventory_shape(fleet: Fleet, tmp_path: Path) -> None:
    inventory = yaml.safe_load(fleet.write_inventory(tmp_path / "hosts.yml", "/srv/spark").read_text())
    assert inventory["all"]["hosts"]["h2"] == {
        "ansible_host": fleet.hosts[1].ip,
        "ansible_port": 22,
        "ansible_user": "root",
        "ansible_ssh_private_key_file": str(fleet.client_key),
        "base_dir": "/srv/spark/h2",
    }


@pytest.mark.fleet
def test_killed_host_is_unreachable_and_close_removes_it(ssh_fleet: Callable[[int], Fleet]) -> None:
    lone = ssh_fleet(1)
    (host,) = lone.hosts
    assert lone.ssh(host, "true").returncode == 0
    lone.kill(host)
    assert host.pid is None
    assert lone.ssh(host, "true", check=False).returncode == 255
    lone.close()
    assert not Path(f"/run/netns/{host.netns}").exists()
