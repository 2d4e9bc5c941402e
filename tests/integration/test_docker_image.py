"""docker_image end to end: the real CLI against a private dockerd and real registries (open, htpasswd
NGC-style with `$oauthtoken`, and one that is stopped), plus both backends in-process: the Docker SDK
(this machine) and the docker CLI through a connection (what a remote host gets).

Images are the session's busybox, a variant with another layer (a tag that moves) and a 20 MB random
layer (a pull long enough to show progress). Every test removes the references it pulls first, so the
tests do not depend on each other's leftovers.
"""

from __future__ import annotations

import os
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from sparkprov.connection.local import LocalConnection
from sparkprov.modules.base import ModuleFailure, TaskContext
from sparkprov.modules.docker_image import DockerImageModule
from sparkprov.playbook.templating import Scope
from tests.cli import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_PENDING,
    CliRun,
    assert_converged,
    assert_exit,
    cli_env,
    explain,
    sparkprov,
)
from tests.infra.dockerd import DockerDaemon
from tests.infra.packages import ensure_packages
from tests.infra.process import torn_down
from tests.infra.registry import REGISTRY_PACKAGES, Registry, free_port, manifest_digest, push_image
from tests.infra.slots import Slot

pytestmark = pytest.mark.docker

MASKED = re.compile(r"(?<!\*)\*{8}(?!\*)")  # the masker's ******** (banners have longer runs)


@dataclass
class Site:
    """A one-play playbook of docker_image tasks, run through the real CLI against the private dockerd."""

    root: Path
    dockerd: DockerDaemon

    def run(
        self, command: str, *tasks: dict[str, Any], env: dict[str, str] | None = None, text: bool = False
    ) -> CliRun:
        entries = [{"name": f"image {i}", "docker_image": args} for i, args in enumerate(tasks)]
        play = {"name": "images", "hosts": "localhost", "gather_facts": False, "tasks": entries}
        (self.root / "site.yml").write_text(yaml.safe_dump([play], sort_keys=False))
        full_env = cli_env(self.dockerd.env)
        full_env.pop("NGC_API_KEY", None)
        full_env.update(env or {})
        output = () if text else ("--format", "json")
        return sparkprov(command, "site.yml", *output, cwd=self.root, env=full_env, timeout=60)


def result(run: CliRun, index: int = 0) -> dict[str, Any]:
    """localhost's result of task `index`."""
    task = run.doc["plays"][0]["tasks"][index]
    return dict(task["hosts"]["localhost"])


def forget(dockerd: DockerDaemon, *repositories: str) -> None:
    """Remove every tag and digest reference of `repositories` from the daemon (images go with the last)."""
    for repository in repositories:
        listing = dockerd.docker(
            "image", "ls", "--digests", "--format", "{{.Tag}} {{.Digest}}", repository
        ).stdout.split("\n")
        for line in filter(None, listing):
            tag, digest = line.split(" ")
            refs = [f"{repository}:{tag}"] if tag != "<none>" else []
            refs += [f"{repository}@{digest}"] if digest != "<none>" else []
            for ref in refs:
                dockerd.docker("image", "rm", ref, check=False)


def present(dockerd: DockerDaemon, ref: str) -> bool:
    return dockerd.docker("image", "inspect", ref, check=False).returncode == 0


def import_image(dockerd: DockerDaemon, directory: Path, ref: str, files: dict[str, bytes]) -> str:
    """`docker import` a one-layer image holding `files`."""
    directory.mkdir(parents=True, exist_ok=True)
    archive = directory / "layer.tar"
    with tarfile.open(archive, "w") as tar:
        for name, data in files.items():
            path = directory / name
            path.write_bytes(data)
            tar.add(path, arcname=name)
    dockerd.docker("import", str(archive), ref)
    return ref


@pytest.fixture
def site(tmp_path: Path, dockerd: DockerDaemon) -> Site:
    return Site(tmp_path, dockerd)


@pytest.fixture(scope="module")
def pytorch(dockerd: DockerDaemon, busybox_image: str, registry: Registry) -> str:
    """REGISTRY/nvidia/pytorch:25.11-py3 (the busybox image), pushed once."""
    return push_image(dockerd, busybox_image, registry, "nvidia/pytorch:25.11-py3")


def _no_secret_in(key: str, *runs: CliRun) -> None:
    for run in runs:
        output = run.stdout + run.stderr
        assert key not in output, f"the key leaked: {explain(run)}"
        assert not MASKED.search(output), f"the key reached the output (masked): {explain(run)}"


# ---------------------------------------------------------------- through the CLI, Docker SDK backend


def test_pull_by_tag_then_nothing_to_do(
    site: Site, dockerd: DockerDaemon, registry: Registry, pytorch: str
) -> None:
    forget(dockerd, pytorch.rsplit(":", 1)[0])
    args = {"name": pytorch}

    plan = site.run("plan", args)
    assert_exit(plan, EXIT_PENDING)
    assert result(plan)["msg"] == f"pull {pytorch}"

    applied = site.run("apply", args)
    assert_exit(applied, EXIT_OK)
    pulled = result(applied)
    assert pulled["changed"] and pulled["pulled"], pulled
    assert pulled["digest"] == manifest_digest(registry, "nvidia/pytorch", "25.11-py3")
    assert pulled["id"].startswith("sha256:") and pulled["size"] > 0
    assert pulled["image"] == pytorch

    again = site.run("apply", args)
    assert_converged(again)
    assert {k: result(again)[k] for k in ("id", "digest", "size")} == {
        k: pulled[k] for k in ("id", "digest", "size")
    }
    assert result(again)["pulled"] is False
    assert_exit(site.run("plan", args), EXIT_OK)


def test_a_pinned_digest_wins_over_the_tag(
    site: Site, dockerd: DockerDaemon, registry: Registry, pytorch: str
) -> None:
    repository = pytorch.rsplit(":", 1)[0]
    digest = manifest_digest(registry, "nvidia/pytorch", "25.11-py3")
    forget(dockerd, repository)
    # The tag does not exist in the registry: only the digest can be what is pulled.
    by_arg = {"name": f"{repository}:no-such-tag", "digest": digest}
    in_name = {"name": f"{repository}@{digest}"}

    assert_exit(site.run("plan", by_arg, in_name), EXIT_PENDING)
    applied = site.run("apply", by_arg, in_name)
    assert_exit(applied, EXIT_OK)
    assert result(applied, 0)["changed"] and result(applied, 0)["digest"] == digest
    assert not result(applied, 1)["changed"], "the same digest in the name is already present"
    assert present(dockerd, f"{repository}@{digest}")
    assert not present(dockerd, f"{repository}:no-such-tag")
    assert_converged(site.run("apply", by_arg, in_name))


def test_check_latest_pulls_a_tag_that_moved(
    site: Site, dockerd: DockerDaemon, registry: Registry, busybox_image: str, tmp_path: Path
) -> None:
    ref = push_image(dockerd, busybox_image, registry, "sparkprov-dimg/moving:1")
    forget(dockerd, ref.rsplit(":", 1)[0])
    old = result(site.run("apply", {"name": ref}))
    assert old["pulled"], old

    variant = import_image(
        dockerd, tmp_path / "variant", "sparkprov-dimg/variant:1", {"marker": os.urandom(64)}
    )
    push_image(dockerd, variant, registry, "sparkprov-dimg/moving:1")
    dockerd.docker("tag", old["id"], ref)  # locally the tag still names the old image
    new_digest = manifest_digest(registry, "sparkprov-dimg/moving", "1")
    assert new_digest != old["digest"]

    assert_exit(site.run("plan", {"name": ref}), EXIT_OK)  # check_latest defaults to false
    latest = {"name": ref, "check_latest": True}
    plan = site.run("plan", latest)
    assert_exit(plan, EXIT_PENDING)
    assert result(plan)["msg"] == f"pull newer image {ref}: the registry has {new_digest}"
    assert result(plan)["diff"], "the plan shows the digest change"

    applied = site.run("apply", latest)
    assert_exit(applied, EXIT_OK)
    assert result(applied)["digest"] == new_digest
    assert result(applied)["id"] != old["id"]
    assert_exit(site.run("plan", latest), EXIT_OK)


@pytest.fixture
def stoppable_registry(infra_slot: Slot) -> Iterator[Registry]:
    """A registry of this test's own, which the test may stop."""
    ensure_packages(*REGISTRY_PACKAGES)
    registry = Registry(infra_slot.dir / "docker-image-registry")
    with torn_down(registry.stop):
        registry.start()
        yield registry


def test_without_check_latest_a_plan_never_asks_the_registry(
    site: Site, dockerd: DockerDaemon, busybox_image: str, stoppable_registry: Registry
) -> None:
    ref = push_image(dockerd, busybox_image, stoppable_registry, "nvidia/offline:1")
    forget(dockerd, ref.rsplit(":", 1)[0])
    assert_exit(site.run("apply", {"name": ref}), EXIT_OK)
    stoppable_registry.stop()

    assert_exit(site.run("plan", {"name": ref}), EXIT_OK)
    asked = site.run("plan", {"name": ref, "check_latest": True})
    assert_exit(asked, EXIT_FAILED)
    message = result(asked)["msg"]
    assert message.startswith(f"check the registry for {ref} failed: network error"), message
    assert "connection refused" in message


def test_absent_removes_the_image_once(
    site: Site, dockerd: DockerDaemon, registry: Registry, busybox_image: str
) -> None:
    ref = push_image(dockerd, busybox_image, registry, "sparkprov-dimg/absent:1")
    assert_exit(site.run("apply", {"name": ref}), EXIT_OK)
    absent = {"name": ref, "state": "absent"}

    plan = site.run("plan", absent)
    assert_exit(plan, EXIT_PENDING)
    assert result(plan)["msg"] == f"remove {ref}"
    assert_exit(site.run("apply", absent), EXIT_OK)
    assert not present(dockerd, ref)
    assert_converged(site.run("apply", absent))
    assert_exit(site.run("plan", absent), EXIT_OK)


def test_ngc_auth_from_the_environment_and_the_key_is_never_shown(
    site: Site, dockerd: DockerDaemon, busybox_image: str, auth_registry: Registry
) -> None:
    ref = push_image(dockerd, busybox_image, auth_registry, "nvidia/private:1")
    forget(dockerd, ref.rsplit(":", 1)[0])
    key = str(auth_registry.password)
    args = {"name": ref, "registry_auth": "ngc"}

    anonymous = site.run("apply", {"name": ref})
    assert_exit(anonymous, EXIT_FAILED)
    assert "unauthorized" in result(anonymous)["msg"] and ref in result(anonymous)["msg"]

    missing = site.run("plan", args)
    assert_exit(missing, EXIT_FAILED)
    assert "export NGC_API_KEY" in result(missing)["msg"]

    env = {"NGC_API_KEY": key}
    applied = site.run("apply", args, env=env)
    assert_exit(applied, EXIT_OK)
    assert result(applied)["digest"] == manifest_digest(auth_registry, "nvidia/private", "1")
    checked = site.run("plan", {**args, "check_latest": True}, env=env)  # Basic auth to the registry
    assert_exit(checked, EXIT_OK)
    text = site.run("apply", args, env=env, text=True)
    assert_exit(text, EXIT_OK)
    _no_secret_in(key, applied, checked, text)
    # The SDK passed the key as auth_config: nothing was written to the shared Docker config.
    config = dockerd.config_dir / "config.json"
    assert not config.exists() or key not in config.read_text()


def test_a_wrong_key_fails_naming_the_image_and_unauthorized(
    site: Site, dockerd: DockerDaemon, busybox_image: str, auth_registry: Registry
) -> None:
    ref = push_image(dockerd, busybox_image, auth_registry, "nvidia/private:2")
    forget(dockerd, ref.rsplit(":", 1)[0])
    wrong = "nvapi-not-the-right-key-0123456789"
    failed = site.run("apply", {"name": ref, "registry_auth": "ngc"}, env={"NGC_API_KEY": wrong})
    assert_exit(failed, EXIT_FAILED)
    message = result(failed)["msg"]
    assert message.startswith(f"pull {ref} failed: unauthorized"), message
    assert "$NGC_API_KEY" in message
    _no_secret_in(wrong, failed)


def test_unknown_tag_is_not_found(site: Site, registry: Registry, pytorch: str) -> None:
    ref = pytorch.replace("25.11-py3", "99.99-py3")
    failed = site.run("apply", {"name": ref})
    assert_exit(failed, EXIT_FAILED)
    message = result(failed)["msg"]
    assert message.startswith(f"pull {ref} failed: not found"), message
    assert "manifest unknown" in message


def test_registry_down_is_a_network_error(site: Site) -> None:
    ref = f"127.0.0.1:{free_port()}/nvidia/pytorch:25.11-py3"
    failed = site.run("apply", {"name": ref})
    assert_exit(failed, EXIT_FAILED)
    message = result(failed)["msg"]
    assert message.startswith(f"pull {ref} failed: network error reaching 127.0.0.1:"), message
    assert "connection refused" in message and "proxy" in message


def test_progress_lines_without_a_terminal(
    site: Site, dockerd: DockerDaemon, registry: Registry, tmp_path: Path
) -> None:
    source = import_image(
        dockerd, tmp_path / "big", "sparkprov-dimg/big-src:1", {"blob": os.urandom(20_000_000)}
    )
    ref = push_image(dockerd, source, registry, "sparkprov-dimg/big:1")
    forget(dockerd, "sparkprov-dimg/big-src", ref.rsplit(":", 1)[0])  # the layers are gone too
    applied = site.run("apply", {"name": ref}, text=True)
    assert_exit(applied, EXIT_OK)
    lines = [line for line in applied.stdout.splitlines() if f"[localhost] pull {ref}: " in line]
    assert lines, explain(applied)
    assert re.search(r"/ 2\d\.\d MB \(100%\)$", lines[-1]), lines
    assert sum(line.endswith("(100%)") for line in lines) == 1, lines
    assert f"changed: [localhost] => pulled {ref} (1 layer, 20.0 MB)" in applied.stdout


# ---------------------------------------------------------------- in-process: both backends


class RecordingRemote(LocalConnection):
    """This machine seen as a remote host (so docker_image takes the CLI backend), recording each run."""

    is_local = False

    def __init__(self) -> None:
        super().__init__("spark-remote")
        self.calls: list[tuple[list[str], bytes | None, dict[str, str]]] = []

    def run(self, argv: list[str], **kwargs: Any) -> Any:
        self.calls.append((list(argv), kwargs.get("stdin"), dict(kwargs.get("env") or {})))
        return super().run(argv, **kwargs)


@dataclass
class Recorder:
    progress: list[tuple[str, int, int | None]]
    secrets: list[str]


def _context(conn: LocalConnection, dockerd: DockerDaemon) -> tuple[TaskContext, Recorder]:
    seen = Recorder([], [])
    ctx = TaskContext(
        conn=conn,
        become=None,
        scope=Scope([]),
        search_dirs=(),
        environment=dict(dockerd.env),
        progress=lambda what, done, total: seen.progress.append((what, done, total)),
        secret=seen.secrets.append,
    )
    return ctx, seen


def test_cli_backend_pulls_with_the_key_on_stdin_only(
    dockerd: DockerDaemon, busybox_image: str, auth_registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref = push_image(dockerd, busybox_image, auth_registry, "nvidia/remote:1")
    forget(dockerd, ref.rsplit(":", 1)[0])
    key = str(auth_registry.password)
    monkeypatch.setenv("NGC_API_KEY", key)
    conn = RecordingRemote()
    ctx, seen = _context(conn, dockerd)
    module, args = DockerImageModule(), {"name": ref, "registry_auth": "ngc"}

    change = module.check(args, ctx)
    assert change is not None and change.summary == f"pull {ref}"
    outcome = module.apply(change, ctx)
    assert outcome.data["digest"] == manifest_digest(auth_registry, "nvidia/remote", "1")
    assert module.check(args, ctx) is None
    assert seen.secrets == [key]  # registered when read; the converged check needs no key
    assert seen.progress[0] == (f"pull {ref}", 0, None)
    assert seen.progress[-1] == (f"pull {ref}", outcome.data["size"], outcome.data["size"])

    logins = [(argv, stdin, env) for argv, stdin, env in conn.calls if argv[:2] == ["docker", "login"]]
    assert len(logins) == 1 and "--password-stdin" in logins[0][0] and logins[0][1] == key.encode()
    assert all(key not in " ".join(argv) and key not in str(env) for argv, _, env in conn.calls)
    assert not Path(logins[0][2]["DOCKER_CONFIG"]).exists(), "the throwaway login is removed"

    removal = module.check({"name": ref, "state": "absent"}, ctx)
    assert removal is not None
    module.apply(removal, ctx)
    assert not present(dockerd, ref)


def test_cli_backend_errors(
    dockerd: DockerDaemon, auth_registry: Registry, pytorch: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx, _ = _context(RecordingRemote(), dockerd)
    module = DockerImageModule()
    monkeypatch.setenv("NGC_API_KEY", "nvapi-wrong-key-for-the-cli")
    cases = {
        f"{auth_registry.url}/nvidia/remote:2": "unauthorized",
        pytorch.replace("25.11-py3", "0.0-none"): "not found",
        f"127.0.0.1:{free_port()}/nvidia/x:1": "network error",
    }
    for ref, kind in cases.items():
        args = {"name": ref, "registry_auth": "ngc"}
        change = module.check(args, ctx)
        assert change is not None
        with pytest.raises(ModuleFailure) as info:
            module.apply(change, ctx)
        assert str(info.value).startswith(f"pull {ref} failed: {kind}"), str(info.value)
        assert "nvapi-wrong-key-for-the-cli" not in str(info.value)


def test_sdk_backend_hands_the_key_to_the_daemon_as_auth_config(
    dockerd: DockerDaemon, busybox_image: str, auth_registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    from docker.api.image import ImageApiMixin

    ref = push_image(dockerd, busybox_image, auth_registry, "nvidia/local:1")
    forget(dockerd, ref.rsplit(":", 1)[0])
    key = str(auth_registry.password)
    monkeypatch.setenv("NGC_API_KEY", key)
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    real_pull = ImageApiMixin.pull

    def spy(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append((args, kwargs))
        return real_pull(self, *args, **kwargs)

    monkeypatch.setattr(ImageApiMixin, "pull", spy)
    ctx, _ = _context(LocalConnection(), dockerd)
    module = DockerImageModule()
    change = module.check({"name": ref, "registry_auth": "ngc"}, ctx)
    assert change is not None
    module.apply(change, ctx)

    [(positional, keywords)] = calls
    assert positional == (ref,)
    assert keywords["auth_config"] == {"username": "$oauthtoken", "password": key}
