"""The compose module end to end: the real CLI against a private dockerd with the real Compose v2.

Every project is rendered from a test template (busybox, `sleep`, `init: true` so that stopping is
instant) into the test's own directory and taken down at the end of the test, also after failures.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

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

pytestmark = pytest.mark.docker

APP_TEMPLATE = """\
services:
  app:
    image: {{ image }}
    init: true
    command: ["sleep", "{{ duration }}"]
"""
BAD_TEMPLATE = APP_TEMPLATE + "    bogus_key: 1\n"


@dataclass
class ComposeProject:
    """One test's compose project: a playbook with one compose task, run through the CLI."""

    root: Path
    name: str
    dockerd: DockerDaemon
    args: dict[str, Any] = field(default_factory=dict)
    vars: dict[str, Any] = field(default_factory=dict)

    @property
    def dest(self) -> Path:
        return self.root / "projects" / self.name / "compose.yml"

    def run(self, command: str, *extra: str, env: dict[str, str] | None = None) -> CliRun:
        """`sparkprov COMMAND site.yml --format json` with the current args and vars."""
        task = {"name": f"compose project {self.name}", "compose": {"dest": str(self.dest), **self.args}}
        play = {
            "name": "compose",
            "hosts": "localhost",
            "gather_facts": False,
            "vars": self.vars,
            "tasks": [task],
        }
        (self.root / "site.yml").write_text(yaml.safe_dump([play], sort_keys=False))
        full_env = cli_env({**self.dockerd.env, **(env or {})})
        return sparkprov(command, "site.yml", "--format", "json", *extra, cwd=self.root, env=full_env)

    def containers(self) -> list[dict[str, Any]]:
        """`docker inspect` of the project's containers (any state)."""
        label = f"label=com.docker.compose.project={self.name}"
        ids = self.dockerd.docker("ps", "--all", "--quiet", "--no-trunc", "--filter", label).stdout.split()
        return json.loads(self.dockerd.docker("inspect", *ids).stdout) if ids else []

    def container(self) -> dict[str, Any]:
        """The one container of the project, which must be running."""
        (found,) = self.containers()
        assert found["State"]["Running"], found["State"]
        return found

    def networks(self) -> list[str]:
        label = f"label=com.docker.compose.project={self.name}"
        return self.dockerd.docker("network", "ls", "--quiet", "--filter", label).stdout.split()

    def down(self) -> None:
        self.dockerd.docker(
            "compose", "-p", self.name, "down", "--timeout", "1", "--remove-orphans", check=False
        )


@pytest.fixture
def project(
    dockerd: DockerDaemon, busybox_image: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[ComposeProject]:
    """A busybox `sleep` project named after the test, rendered from templates/app.yml.j2."""
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "app.yml.j2").write_text(APP_TEMPLATE)
    name = request.node.name.removeprefix("test_").replace("_", "-")[:40]
    found = ComposeProject(
        tmp_path, name, dockerd, {"src": "app.yml.j2"}, {"image": busybox_image, "duration": 300}
    )
    try:
        yield found
    finally:
        found.down()


def plan_entry(result: CliRun) -> dict[str, Any]:
    """The one pending change of a `plan --format json`."""
    assert_exit(result, EXIT_PENDING)
    (entry,) = result.doc["plan"]
    return dict(entry)


def diff_text(entry: dict[str, Any], header_part: str) -> tuple[str, str]:
    """(before, after) of the diff whose header contains `header_part`."""
    for diff in entry["diff"]:
        if header_part in diff["before_header"]:
            return diff["before"], diff["after"]
    raise AssertionError(f"no diff for {header_part} in {entry['diff']}")


def applied(project: ComposeProject, *extra: str, env: dict[str, str] | None = None) -> CliRun:
    """An apply that succeeds and changes something."""
    result = project.run("apply", *extra, env=env)
    assert_exit(result, EXIT_OK)
    assert result.stats()["changed"] == 1, explain(result)
    return result


def test_up_then_converged(project: ComposeProject) -> None:
    entry = plan_entry(project.run("plan"))
    assert "create app" in entry["change"]
    assert not project.dest.exists() and project.containers() == []  # plan changed nothing

    applied(project)
    container = project.container()
    assert container["HostConfig"]["Init"] is True
    assert [container["Path"], *container["Args"]] == ["sleep", "300"]
    assert project.dest.read_text() == APP_TEMPLATE.replace("{{ image }}", project.vars["image"]).replace(
        "{{ duration }}", "300"
    )

    assert_converged(project.run("apply"))
    assert_exit(project.run("plan"), EXIT_OK)
    assert project.container()["Id"] == container["Id"]


def test_changed_variable_recreates_only_when_applied(project: ComposeProject) -> None:
    applied(project)
    before = project.container()["Id"]

    entry = plan_entry(project.run("plan", "-e", "duration=301"))
    assert "recreate app: config changed" in entry["change"]
    old, new = diff_text(entry, str(project.dest))
    assert '"sleep", "300"' in old and '"sleep", "301"' in new
    assert project.container()["Id"] == before  # the plan re-created nothing

    applied(project, "-e", "duration=301")
    after = project.container()
    assert after["Id"] != before
    assert after["Args"][-1] == "301"
    assert_converged(project.run("apply", "-e", "duration=301"))


def test_new_image_under_the_same_tag_recreates(project: ComposeProject, busybox_image: str) -> None:
    tag = f"sparkprov-test/{project.name}:1"
    project.dockerd.docker("tag", busybox_image, tag)
    project.vars["image"] = tag
    applied(project)
    first = project.container()
    # Same tag, different image: commit the running container with one more label.
    project.dockerd.docker("commit", "--change", "LABEL revision=2", first["Id"], tag)
    new_id = project.dockerd.docker("image", "inspect", "--format", "{{.Id}}", tag).stdout.strip()
    assert new_id != first["Image"]

    entry = plan_entry(project.run("plan"))
    assert "recreate app: image changed" in entry["change"]
    assert "config changed" not in entry["change"]
    assert str(project.dest) not in entry["change"]  # the file itself is unchanged
    assert project.container()["Id"] == first["Id"]

    applied(project)
    second = project.container()
    assert second["Id"] != first["Id"] and second["Image"] == new_id
    assert_converged(project.run("apply"))


def test_hand_edited_file_is_drift(project: ComposeProject) -> None:
    applied(project)
    container = project.container()["Id"]
    rendered = project.dest.read_text()
    project.dest.write_text(rendered + "# edited by hand\n")

    entry = plan_entry(project.run("plan"))
    old, new = diff_text(entry, str(project.dest))
    assert old == rendered + "# edited by hand\n" and new == rendered
    assert "up -d" not in entry["change"]  # the running containers already match the template

    applied(project)
    assert project.dest.read_text() == rendered
    assert project.container()["Id"] == container


def test_invalid_compose_file_fails_and_writes_nothing(project: ComposeProject) -> None:
    (project.root / "templates" / "app.yml.j2").write_text(BAD_TEMPLATE)
    for command in ("plan", "apply"):
        result = project.run(command)
        assert_exit(result, EXIT_FAILED)
        message = result.doc["plays"][0]["tasks"][0]["hosts"]["localhost"]["msg"]
        assert "additional properties 'bogus_key' not allowed" in message, message
        assert "nothing was written" in message
    assert not project.dest.parent.exists()
    assert project.containers() == []


def test_absent_takes_the_project_down(project: ComposeProject) -> None:
    applied(project)
    assert project.networks()

    project.args = {"state": "absent"}
    entry = plan_entry(project.run("plan"))
    assert "down (remove 1 container, 1 network)" in entry["change"]
    applied(project)
    assert project.containers() == [] and project.networks() == []
    assert project.dest.exists()  # kept unless remove_file
    assert_converged(project.run("apply"))

    project.args["remove_file"] = True
    applied(project)
    assert not project.dest.exists()
    assert_converged(project.run("apply"))


PYTORCH_DEV = "compose/pytorch-dev.yml.j2"


def pytorch_dev(project: ComposeProject, busybox_image: str, state: str) -> Callable[[], dict[str, Any]]:
    """Point the project at the bundled template with a busybox image; returns a reader of the
    service as `docker compose config` resolves the rendered file."""
    project.args = {
        "src": PYTORCH_DEV,
        "state": state,
        "vars": {
            "pytorch_image": busybox_image,
            "workspace_dir": str(project.root / "workspace"),
            "hf_cache_dir": str(project.root / "hf-cache"),
            "jupyter_port": 18888,
        },
    }

    def service() -> dict[str, Any]:
        config = project.dockerd.docker("compose", "-f", str(project.dest), "config", "--format", "json")
        return dict(json.loads(config.stdout)["services"]["pytorch"])

    return service


def test_bundled_pytorch_dev_template_renders_a_valid_gpu_service(
    project: ComposeProject, busybox_image: str
) -> None:
    service = pytorch_dev(project, busybox_image, "rendered")
    applied(project, env={"JUPYTER_TOKEN": "token-that-stays-out-of-the-file"})
    assert "token-that-stays-out-of-the-file" not in project.dest.read_text()

    resolved = service()
    assert resolved["image"] == busybox_image
    devices = resolved["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": -1, "capabilities": ["gpu"]}]  # count: all
    assert resolved["ipc"] == "host"
    assert resolved["ulimits"] == {"memlock": -1, "stack": 67108864}
    assert [(v["source"], v["target"]) for v in resolved["volumes"]] == [
        (str(project.root / "workspace"), "/workspace"),
        (str(project.root / "hf-cache"), "/root/.cache/huggingface"),
    ]
    (port,) = resolved["ports"]
    assert (port["host_ip"], port["published"], port["target"]) == ("127.0.0.1", "18888", 8888)
    assert "JUPYTER_TOKEN" in resolved["environment"]
    assert resolved["init"] is True and resolved["restart"] == "unless-stopped"
    assert resolved["command"][:2] == ["jupyter", "lab"]
    assert project.containers() == []  # rendered: the file only
    assert_converged(project.run("apply"))


def test_bundled_pytorch_dev_up_without_gpu_runtime_fails_clearly(
    project: ComposeProject, busybox_image: str
) -> None:
    pytorch_dev(project, busybox_image, "present")
    result = project.run("apply")
    assert_exit(result, EXIT_FAILED)
    message = result.doc["plays"][0]["tasks"][0]["hosts"]["localhost"]["msg"]
    assert "no NVIDIA container runtime" in message, message
    assert 'could not select device driver "nvidia" with capabilities: [[gpu]]' in message
    assert "nvidia-container-toolkit" in message
