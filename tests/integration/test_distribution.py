"""Distribution end to end, through the real CLI on a fleet of three real sshd hosts.

- `docker_image` with `distribute`: each host has a dockerd of its own (in its network namespace,
  DOCKER_HOST set by sshd), fed from the controller's dockerd (the session's private one) or from a
  seed host. The hosts cannot reach the registry (it listens on the machine's 127.0.0.1, outside
  their namespaces), so an image can only arrive on them by distribution; the registry's access log
  shows how often the image's layer was downloaded at all.
- `ollama` with `distribute`: each host's store is a directory (the hosts share the filesystem) that a
  fake Ollama server of its own serves, listing what the directory holds as the real one does; the
  controller's Ollama is another such server with its own store.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from sparkprov.connection.base import CommandFailed, CommandTimeout
from sparkprov.connection.ssh import SSHConnection
from sparkprov.inventory import Host
from tests.cli import (
    EXIT_OK,
    EXIT_PENDING,
    CliRun,
    assert_exit,
    cli_env,
    explain,
    sparkprov,
)
from tests.infra.dockerd import DockerDaemon
from tests.infra.fleet import Fleet
from tests.infra.host_dockerd import SSHD_DOCKER_ENV, HostDockerd, start_host_dockerds, stop_host_dockerds
from tests.infra.ollama_store import StoreOllama, manifest_file, write_model
from tests.infra.process import run, torn_down
from tests.infra.registry import MANIFEST_TYPES, Registry, push_image
from tests.infra.slots import Slot

pytestmark = [pytest.mark.fleet, pytest.mark.root]

LAYER_BYTES = 24 * 1024 * 1024
HOSTS = ("h1", "h2", "h3")


# ---------------------------------------------------------------- fixtures


@dataclass
class DockerFleet:
    fleet: Fleet
    daemons: dict[str, HostDockerd]


@pytest.fixture(scope="module")
def docker_fleet(ssh_fleet: Callable[..., Fleet]) -> Iterator[DockerFleet]:
    """h1..h3, each with its own dockerd; both torn down at the end of the module."""
    fleet = ssh_fleet(len(HOSTS), extra_sshd_config=SSHD_DOCKER_ENV)
    with torn_down(fleet.close):
        daemons = start_host_dockerds(fleet.hosts)
        with torn_down(lambda: stop_host_dockerds(daemons)):
            yield DockerFleet(fleet, {d.host.name: d for d in daemons})


@dataclass(frozen=True)
class DistImage:
    ref: str  # REGISTRY/nvidia/distrib:TAG
    repository: str  # nvidia/distrib
    digest: str  # the manifest digest (RepoDigests)
    layer: str  # the layer blob's digest
    id: str  # the image ID


def make_image(dockerd: DockerDaemon, registry: Registry, workdir: Path) -> DistImage:
    """A one-layer image of random bytes, pushed to the registry, then removed from the controller's
    dockerd entirely (so a pull there downloads the layer)."""
    tag = secrets.token_hex(4)
    workdir.mkdir(parents=True, exist_ok=True)
    payload = workdir / "payload.bin"
    payload.write_bytes(os.urandom(LAYER_BYTES))
    archive = workdir / "layer.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(payload, arcname="payload.bin")
    local = f"sparkprov-test/distrib:{tag}"
    dockerd.docker("import", str(archive), local)
    ref = push_image(dockerd, local, registry, f"nvidia/distrib:{tag}")
    image_id = dockerd.docker("image", "inspect", "--format", "{{.Id}}", ref).stdout.strip()
    status, headers, body = registry.get(f"/v2/nvidia/distrib/manifests/{tag}", {"Accept": MANIFEST_TYPES})
    assert status == 200, body
    manifest = yaml.safe_load(body)
    layer = manifest["layers"][0]["digest"]
    return DistImage(ref, "nvidia/distrib", str(headers["Docker-Content-Digest"]), layer, image_id)


def preload(dockerd: DockerDaemon, image: DistImage, target: HostDockerd) -> None:
    """`docker save` on the controller piped into `docker load` on one host, as an operator would."""
    script = 'docker save "$1" | DOCKER_HOST="$2" docker load -q'
    run(["sh", "-c", script, "sh", image.ref, target.env["DOCKER_HOST"]], env={**os.environ, **dockerd.env})


def forget_on_controller(dockerd: DockerDaemon, image: DistImage) -> None:
    refs = dockerd.docker("image", "inspect", "--format", '{{join .RepoTags " "}}', image.id).stdout.split()
    dockerd.docker("image", "rm", *refs)
    assert dockerd.docker("image", "inspect", image.id, check=False).returncode != 0


def blob_downloads(registry: Registry, image: DistImage, since: int) -> int:
    """GETs of the image's layer blob in the registry's access log after byte offset `since`."""
    text = registry.daemon.log.read_bytes()[since:].decode(errors="replace")
    pattern = rf'"GET /v2/{re.escape(image.repository)}/blobs/{re.escape(image.layer)} HTTP/1\.\d" 200'
    return len(re.findall(pattern, text))


def log_offset(registry: Registry) -> int:
    return registry.daemon.log.stat().st_size


@dataclass
class Site:
    root: Path
    dockerd: DockerDaemon
    fleet: Fleet

    def run(self, command: str, args: dict[str, Any], *options: str) -> CliRun:
        task = {"name": "image", "docker_image": args}
        play = {"name": "distribute", "hosts": "all", "gather_facts": False, "tasks": [task]}
        (self.root / "site.yml").write_text(yaml.safe_dump([play], sort_keys=False))
        self.fleet.write_inventory(self.root / "hosts.yml", self.root / "base")
        env = cli_env({**self.dockerd.env, "SPARKPROV_KNOWN_HOSTS": str(self.fleet.known_hosts_file)})
        argv = [command, "site.yml", "-i", "hosts.yml", "--forks", "5", *options]
        return sparkprov(*argv, cwd=self.root, env=env, timeout=120)


@pytest.fixture
def site(tmp_path: Path, dockerd: DockerDaemon, docker_fleet: DockerFleet) -> Site:
    return Site(tmp_path, dockerd, docker_fleet.fleet)


def ids(docker_fleet: DockerFleet, ref: str) -> dict[str, str | None]:
    return {name: docker_fleet.daemons[name].image_id(ref) for name in HOSTS}


def progress_hosts(output: str, ref: str) -> set[str]:
    """Hosts with a `[hN] distribute REF: ... (100%)` line."""
    return set(re.findall(rf"\[(h\d)\] distribute {re.escape(ref)}: .*\(100%\)", output))


def changed_hosts(run_result: CliRun) -> dict[str, int]:
    return {name: run_result.stats(name)["changed"] for name in HOSTS}


# ---------------------------------------------------------------- tests


@pytest.mark.docker
def test_distribute_from_the_controller(
    site: Site, dockerd: DockerDaemon, registry: Registry, docker_fleet: DockerFleet, tmp_path: Path
) -> None:
    image = make_image(dockerd, registry, tmp_path / "image")
    preload(dockerd, image, docker_fleet.daemons["h1"])
    forget_on_controller(dockerd, image)
    args = {"name": image.ref, "distribute": True}

    plan = site.run("plan", args, "--format", "json")
    assert_exit(plan, EXIT_PENDING)
    pending = plan.doc["plays"][0]["tasks"][0]["hosts"]
    assert pending["h1"]["changed"] is False
    assert {pending[h]["msg"] for h in ("h2", "h3")} == {
        f"copy {image.ref} from the controller (fetched there once)"
    }

    before = log_offset(registry)
    applied = site.run("apply", args)
    assert_exit(applied, EXIT_OK)
    assert re.search(r"h1\s+: ok=1\s+changed=0", applied.stdout), explain(applied)
    for host in ("h2", "h3"):
        assert re.search(rf"{host}\s+: ok=1\s+changed=1", applied.stdout), explain(applied)
    assert progress_hosts(applied.stdout, image.ref) == {"h2", "h3"}, explain(applied)
    assert ids(docker_fleet, image.ref) == dict.fromkeys(HOSTS, image.id)
    assert blob_downloads(registry, image, before) == 1, "the controller pulls once for the whole fleet"
    assert dockerd.docker("image", "inspect", image.ref, check=False).returncode == 0

    copies = ids(docker_fleet, f"{image.ref.rsplit(':', 1)[0]}:sha256-{image.digest.split(':')[1]}")
    assert copies == {"h1": None, "h2": image.id, "h3": image.id}, "copies carry the registry digest as a tag"

    before = log_offset(registry)
    again = site.run("apply", args, "--format", "json")
    assert_exit(again, EXIT_OK)
    assert changed_hosts(again) == dict.fromkeys(HOSTS, 0), explain(again)
    assert_exit(site.run("plan", args, "--format", "json"), EXIT_OK)
    assert blob_downloads(registry, image, before) == 0

    # With check_latest the copies are known to be the registry's image; h1's hand-loaded one is not.
    latest = site.run("plan", {**args, "check_latest": True}, "--format", "json")
    pending = latest.doc["plays"][0]["tasks"][0]["hosts"]
    assert {host: pending[host]["changed"] for host in HOSTS} == {"h1": True, "h2": False, "h3": False}


@pytest.mark.docker
def test_distribute_a_pinned_image_from_a_seed_host(
    site: Site, dockerd: DockerDaemon, registry: Registry, docker_fleet: DockerFleet, tmp_path: Path
) -> None:
    """h1 holds the image by digest (pulled there, as a seed would); h2 and h3 get it from h1, and
    later checks recognise the copies although `docker load` keeps no registry digest."""
    image = make_image(dockerd, registry, tmp_path / "image")
    preload(dockerd, image, docker_fleet.daemons["h1"])
    forget_on_controller(dockerd, image)
    pinned = f"{image.ref.rsplit(':', 1)[0]}@{image.digest}"
    h1 = docker_fleet.daemons["h1"]
    h1.docker("tag", image.ref, f"{image.ref.rsplit(':', 1)[0]}:sha256-{image.digest.split(':')[1]}")
    args = {"name": pinned, "distribute": True, "seed": "h1"}

    before = log_offset(registry)
    applied = site.run("apply", args, "--format", "json")
    assert_exit(applied, EXIT_OK)
    results = applied.doc["plays"][0]["tasks"][0]["hosts"]
    assert changed_hosts(applied) == {"h1": 0, "h2": 1, "h3": 1}, explain(applied)
    for host in ("h2", "h3"):
        assert results[host]["id"] == image.id and results[host]["source"] == "h1", results[host]
        assert "from seed host h1" in results[host]["msg"]
    tag = f"{image.ref.rsplit(':', 1)[0]}:sha256-{image.digest.split(':')[1]}"
    assert ids(docker_fleet, tag) == dict.fromkeys(HOSTS, image.id)
    assert blob_downloads(registry, image, before) == 0, "nothing comes from the registry"

    assert_exit(site.run("plan", args, "--format", "json"), EXIT_OK)  # the copies count as the image


# ---------------------------------------------------------------- streaming over SSH


@pytest.fixture
def ssh_conn(plain_fleet: Fleet) -> Iterator[SSHConnection]:
    target = plain_fleet.hosts[0]
    host = Host(
        target.name,
        {
            "ansible_host": target.ip,
            "ansible_user": "root",
            "ansible_ssh_private_key_file": str(plain_fleet.client_key),
        },
    )
    conn = SSHConnection(host, known_hosts_file=plain_fleet.known_hosts_file, ssh_config_file=os.devnull)
    yield conn
    conn.close()


def _chunks(count: int) -> Iterator[bytes]:
    for index in range(count):
        yield bytes([index]) * (1024 * 1024)


def test_ssh_streams_stdin_and_stdout(ssh_conn: SSHConnection, tmp_path: Path) -> None:
    seen: list[int] = []
    result = ssh_conn.run_with_input(["sha256sum"], _chunks(32), on_progress=seen.append, env={"A": "b"})
    assert result.rc == 0 and result.stdout.split()[0] == hashlib.sha256(b"".join(_chunks(32))).hexdigest()
    assert seen[-1] == 32 * 1024 * 1024 and len(seen) == 32
    piped = ssh_conn.run_with_input(
        ["wc", "-c"], ssh_conn.stream_output(["head", "-c", "3000000", "/dev/zero"])
    )
    assert piped.stdout.strip() == "3000000"
    early = ssh_conn.run_with_input(["sh", "-c", "head -c 1 >/dev/null; exit 4"], _chunks(64))
    assert early.rc == 4
    with pytest.raises(CommandFailed, match="no such image"):
        list(ssh_conn.stream_output(["sh", "-c", "echo x; echo 'no such image' >&2; exit 1"]))


def test_ssh_stream_failures_stop_the_remote_command(ssh_conn: SSHConnection, tmp_path: Path) -> None:
    marker = tmp_path / "loaded"

    def broken() -> Iterator[bytes]:
        yield b"x" * 1024
        raise RuntimeError("the seed went away")

    with pytest.raises(RuntimeError, match="the seed went away"):
        ssh_conn.run_with_input(["sh", "-c", f"cat >/dev/null && touch {marker}"], broken())
    assert not marker.exists()
    with pytest.raises(CommandTimeout):
        ssh_conn.run_with_input(["sleep", "30"], _chunks(1), timeout=1)
    stream = ssh_conn.stream_output(["cat", "/dev/zero"])
    assert next(stream)
    stream.close()
    assert ssh_conn.run(["true"]).rc == 0  # the connection lives on


# ---------------------------------------------------------------- ollama models


MODEL = "tinyllama:1b"


@pytest.fixture(scope="module")
def plain_fleet(ssh_fleet: Callable[..., Fleet]) -> Iterator[Fleet]:
    fleet = ssh_fleet(len(HOSTS))
    with torn_down(fleet.close):
        yield fleet


def test_distribute_an_ollama_model_from_the_controller(
    plain_fleet: Fleet, infra_slot: Slot, tmp_path: Path
) -> None:
    """h1 has the model, h3 one of its blobs (shared with another model), h2 nothing: h2 and h3 get
    what they lack from the controller's store, and their Ollama lists the model."""
    seed_store, base = tmp_path / "seed-models", tmp_path / "base"
    layers = {"model": os.urandom(3 * 1024 * 1024), "template": b"{{ .Prompt }}", "params": b'{"stop":[]}'}
    blobs = write_model(seed_store, MODEL, layers, config=b'{"model_format":"gguf"}')
    stores = {host: base / host / "models" for host in HOSTS}
    write_model(stores["h1"], MODEL, layers, config=b'{"model_format":"gguf"}')
    write_model(stores["h3"], "other:1b", {"model": layers["model"]}, config=b"{}")
    stores["h2"].mkdir(parents=True)

    bridge = f"{infra_slot.fleet_subnet}.1"
    seed = StoreOllama(seed_store).start()
    servers = {host: StoreOllama(stores[host]).start(host=bridge) for host in HOSTS}
    try:
        site = OllamaSite(tmp_path, plain_fleet, {h: server.url for h, server in servers.items()})
        args = {
            "url": "{{ ollama_url }}",
            "models": [MODEL],
            "distribute": True,
            "seed_url": seed.url,
            "seed_models_dir": str(seed_store),
            "models_dir": "{{ base_dir }}/models",
        }
        plan = site.run("plan", args, "--format", "json")
        assert_exit(plan, EXIT_PENDING)
        pending = plan.doc["plays"][0]["tasks"][0]["hosts"]
        assert pending["h2"]["msg"] == f"copy {MODEL} from the controller", pending["h2"]

        applied = site.run("apply", args)
        assert_exit(applied, EXIT_OK)
        assert re.search(r"h1\s+: ok=1\s+changed=0", applied.stdout), explain(applied)
        assert set(re.findall(rf"\[(h\d)\] distribute {MODEL}: .*\(100%\)", applied.stdout)) == {"h2", "h3"}
        assert "1 already here" in applied.stdout, explain(applied)
        assert re.search(r"4 blob\(s\): copied 3\.\d MB from the controller at", applied.stdout), explain(
            applied
        )
        for host in HOSTS:
            assert MODEL in servers[host].installed(), host
            manifest = manifest_file(stores[host], MODEL)
            assert manifest.read_bytes() == manifest_file(seed_store, MODEL).read_bytes()
            for blob in blobs:
                assert (stores[host] / "blobs" / blob).read_bytes() == (
                    seed_store / "blobs" / blob
                ).read_bytes()
        assert not list(stores["h2"].glob(".sparkprov-copy.*")), "the temporary directory is removed"
        assert seed.count("/api/pull") == 0

        again = site.run("apply", args, "--format", "json")
        assert_exit(again, EXIT_OK)
        assert changed_hosts(again) == dict.fromkeys(HOSTS, 0), explain(again)
        assert_exit(site.run("plan", args, "--format", "json"), EXIT_OK)
    finally:
        for server in (seed, *servers.values()):
            server.stop()


@dataclass
class OllamaSite:
    root: Path
    fleet: Fleet
    urls: dict[str, str]

    def run(self, command: str, args: dict[str, Any], *options: str) -> CliRun:
        task = {"name": "models", "ollama": args}
        play = {"name": "distribute", "hosts": "all", "gather_facts": False, "tasks": [task]}
        (self.root / "site.yml").write_text(yaml.safe_dump([play], sort_keys=False))
        inventory = self.fleet.write_inventory(self.root / "hosts.yml", self.root / "base")
        data = yaml.safe_load(inventory.read_text())
        for name, url in self.urls.items():
            data["all"]["hosts"][name]["ollama_url"] = url
        inventory.write_text(yaml.safe_dump(data, sort_keys=False))
        env = cli_env({"SPARKPROV_KNOWN_HOSTS": str(self.fleet.known_hosts_file)})
        argv = [command, "site.yml", "-i", "hosts.yml", "--forks", "5", *options]
        return sparkprov(*argv, cwd=self.root, env=env, timeout=120)
