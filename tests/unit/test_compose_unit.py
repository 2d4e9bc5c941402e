"""compose without a Docker daemon: project names, the up/recreate decision, parsing what docker
prints, error messages, the bundled template and the argument schema. The real thing is in
tests/integration/test_compose.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from sparkprov.connection.base import CommandResult
from sparkprov.connection.local import LocalConnection
from sparkprov.errors import Place
from sparkprov.modules.base import ModuleFailure, TaskContext
from sparkprov.modules.compose import (
    ComposeModule,
    Container,
    Service,
    failure_of,
    normalize_project_name,
    parse_containers,
    parse_services,
    project_of,
    render,
    up_actions,
)
from sparkprov.playbook.schema import validate
from sparkprov.playbook.templating import Scope
from sparkprov.resources import data_dir

IMAGE = "sha256:" + "a" * 64
NEW_IMAGE = "sha256:" + "b" * 64


def ctx_for(tmp_path: Path, **variables: Any) -> TaskContext:
    return TaskContext(conn=LocalConnection(), become=None, scope=Scope([variables]), search_dirs=(tmp_path,))


def running(
    service: str = "app", config_hash: str = "h1", image_id: str = IMAGE, up: bool = True
) -> Container:
    return Container(f"id-{service}", service, config_hash, image_id, up)


# ---------------------------------------------------------------- project names


@pytest.mark.parametrize(
    ("directory", "expected"),
    [("pytorch-dev", "pytorch-dev"), ("My Project.v2", "myprojectv2"), ("__x", "x"), ("_-", "")],
)
def test_default_project_name_is_normalised_like_compose(directory: str, expected: str) -> None:
    assert normalize_project_name(directory) == expected


def test_project_name_defaults_to_the_directory_of_dest() -> None:
    project = project_of({"dest": "/srv/Spark_Dev/compose.yml"})
    assert (project.name, project.file, project.directory) == (
        "spark_dev",
        "/srv/Spark_Dev/compose.yml",
        "/srv/Spark_Dev",
    )
    assert project_of({"dest": "/srv/x/compose.yml", "project": "other"}).name == "other"


def test_project_name_that_cannot_be_derived_asks_for_one() -> None:
    with pytest.raises(ModuleFailure, match="set `project:`"):
        project_of({"dest": "/__/compose.yml"})


def test_compose_commands_read_the_rendered_file_from_stdin_as_if_at_dest() -> None:
    project = project_of({"dest": "/srv/dev/compose.yml"})
    assert project.argv("config", from_stdin=True) == [
        "docker", "compose", "-p", "dev", "-f", "-", "--project-directory", "/srv/dev", "config",
    ]  # fmt: skip
    assert project.argv("up") == ["docker", "compose", "-p", "dev", "-f", "/srv/dev/compose.yml", "up"]


# ---------------------------------------------------------------- deciding what `up` does


@pytest.mark.parametrize(
    ("containers", "images", "expected"),
    [
        ([running()], {"img": IMAGE}, []),
        ([], {"img": IMAGE}, ["create app"]),
        ([], {"img": None}, ["create app (image img not present yet)"]),
        ([running(config_hash="old")], {"img": IMAGE}, ["recreate app: config changed"]),
        ([running()], {"img": NEW_IMAGE}, ["recreate app: image changed"]),
        ([running()], {"img": None}, ["recreate app: image changed"]),
        ([running(config_hash="old")], {"img": NEW_IMAGE}, ["recreate app: config changed, image changed"]),
        ([running(up=False)], {"img": IMAGE}, ["start app"]),
        ([running(), running("gone")], {"img": IMAGE}, ["remove orphan gone"]),
    ],
)
def test_up_actions(containers: list[Container], images: dict[str, str | None], expected: list[str]) -> None:
    services = [Service("app", "img", "h1")]
    assert [str(a) for a in up_actions(services, containers, images)] == expected


def test_up_actions_scale_and_services_without_image() -> None:
    services = [Service("app", "img", "h1", replicas=2), Service("built", None, "h2")]
    containers = [running(), running("built", "h2", image_id="sha256:whatever")]
    assert [str(a) for a in up_actions(services, containers, {"img": IMAGE})] == ["scale app: 1 -> 2"]


# ---------------------------------------------------------------- parsing what docker prints


def test_parse_services_joins_config_and_hashes() -> None:
    config = {
        "services": {
            "web": {"image": "nginx", "deploy": {"replicas": 3}},
            "app": {"image": "busybox"},
            "job": {"build": {"context": "."}, "scale": 2},
        }
    }
    hashes = "app 1111\nweb 2222\njob 3333\n"
    assert parse_services(config, hashes) == [
        Service("app", "busybox", "1111"),
        Service("job", None, "3333", 2),
        Service("web", "nginx", "2222", 3),
    ]


def _inspected(service: str, *, oneoff: str = "False", image_label: str | None = IMAGE) -> dict[str, Any]:
    labels = {"com.docker.compose.service": service, "com.docker.compose.oneoff": oneoff}
    labels["com.docker.compose.config-hash"] = "h1"
    if image_label:
        labels["com.docker.compose.image"] = image_label
    return {
        "Id": f"id-{service}",
        "Image": NEW_IMAGE,
        "Config": {"Labels": labels},
        "State": {"Running": True},
    }


def test_parse_containers_skips_one_off_runs_and_prefers_compose_image_label() -> None:
    found = parse_containers(
        [_inspected("b", image_label=None), _inspected("a"), _inspected("run", oneoff="True"), {"Id": "x"}]
    )
    assert found == [
        Container("id-a", "a", "h1", IMAGE, True),
        Container("id-b", "b", "h1", NEW_IMAGE, True),  # an older compose: the container's image
    ]


# ---------------------------------------------------------------- errors


def _failed(stderr: str) -> CommandResult:
    return CommandResult(("docker", "compose"), 1, "", stderr, 0.1)


def test_gpu_error_on_a_host_without_nvidia_runtime_is_explained() -> None:
    stderr = (
        " Container dev-pytorch-1  Starting\nError response from daemon: could not select device driver "
        '"nvidia" with capabilities: [[gpu]]\n'
    )
    message = str(failure_of(_failed(stderr), "docker compose up of project dev"))
    assert message.startswith("docker compose up of project dev: the host has no NVIDIA container runtime")
    assert 'could not select device driver "nvidia" with capabilities: [[gpu]]' in message
    assert "nvidia-container-toolkit" in message


def test_other_compose_errors_are_quoted() -> None:
    message = str(failure_of(_failed("pull access denied for nope\n"), "docker compose up of project dev"))
    assert message == "docker compose up of project dev failed: pull access denied for nope"


def test_missing_docker_is_a_clear_failure(tmp_path: Path) -> None:
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "app.yml.j2").write_text("services: {app: {image: busybox}}\n")
    ctx = ctx_for(tmp_path)
    ctx.environment = {"PATH": str(tmp_path / "nothing-here")}
    with pytest.raises(ModuleFailure, match="docker is not installed"):
        ComposeModule().check({"src": "app.yml.j2", "dest": str(tmp_path / "p" / "compose.yml")}, ctx)
    assert not (tmp_path / "p").exists()


def test_missing_compose_plugin_is_a_clear_failure(tmp_path: Path) -> None:
    fake = tmp_path / "bin" / "docker"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho \"docker: 'compose' is not a docker command.\" >&2\nexit 1\n")
    fake.chmod(0o755)
    ctx = ctx_for(tmp_path)
    ctx.environment = {"PATH": str(fake.parent)}
    with pytest.raises(ModuleFailure, match="Compose v2 plugin is missing"):
        ComposeModule().check({"state": "absent", "dest": str(tmp_path / "p" / "compose.yml")}, ctx)


# ---------------------------------------------------------------- the bundled template


def _bundled(tmp_path: Path, **variables: Any) -> dict[str, Any]:
    args = {"src": "compose/pytorch-dev.yml.j2", "dest": "/srv/dev/compose.yml"}
    text = render(args, ctx_for(tmp_path, **variables))
    document = yaml.safe_load(text)
    assert isinstance(document, dict)
    return dict(document["services"]["pytorch"])


def test_bundled_pytorch_dev_defaults(tmp_path: Path) -> None:
    assert (data_dir("templates") / "compose" / "pytorch-dev.yml.j2").is_file()
    service = _bundled(tmp_path)
    assert service["image"] == "nvcr.io/nvidia/pytorch:25.11-py3"
    assert service["deploy"]["resources"]["reservations"]["devices"] == [
        {"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}
    ]
    assert service["ipc"] == "host"
    assert service["ulimits"] == {"memlock": -1, "stack": 67108864}
    assert service["volumes"] == ["~/workspace:/workspace", "~/.cache/huggingface:/root/.cache/huggingface"]
    assert service["ports"] == ["127.0.0.1:8888:8888"]
    assert service["environment"] == ["JUPYTER_TOKEN"]  # passed through, never written
    assert service["init"] is True and service["restart"] == "unless-stopped"
    assert service["command"][:2] == ["jupyter", "lab"]


@pytest.mark.parametrize("gpu", [False, "false", "no"])
def test_bundled_pytorch_dev_without_gpu(tmp_path: Path, gpu: Any) -> None:
    assert "deploy" not in _bundled(tmp_path, gpu=gpu)


def test_bundled_pytorch_dev_variables(tmp_path: Path) -> None:
    service = _bundled(
        tmp_path,
        pytorch_image="localhost:5000/nvidia/pytorch:25.11-py3",
        workspace_dir="/data/my work",
        hf_cache_dir="/data/hf",
        jupyter_bind="0.0.0.0",
        jupyter_port=9999,
        gpu_count=1,
    )
    assert service["image"] == "localhost:5000/nvidia/pytorch:25.11-py3"
    assert service["volumes"] == ["/data/my work:/workspace", "/data/hf:/root/.cache/huggingface"]
    assert service["ports"] == ["0.0.0.0:9999:8888"]
    assert service["deploy"]["resources"]["reservations"]["devices"][0]["count"] == 1


def test_vars_argument_wins_over_play_variables(tmp_path: Path) -> None:
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "t.j2").write_text("{{ who }}\n")
    args = {"src": "t.j2", "dest": "/x/compose.yml", "vars": {"who": "task"}}
    assert render(args, ctx_for(tmp_path, who="play")) == "task\n"


def test_template_errors_are_module_failures(tmp_path: Path) -> None:
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "t.j2").write_text("{{ nowhere_defined }}\n")
    with pytest.raises(ModuleFailure, match="nowhere_defined"):
        render({"src": "t.j2", "dest": "/x/compose.yml"}, ctx_for(tmp_path))
    with pytest.raises(ModuleFailure, match=r"could not find 'missing\.j2'"):
        render({"src": "missing.j2", "dest": "/x/compose.yml"}, ctx_for(tmp_path))


# ---------------------------------------------------------------- the argument schema


def _problems(args: dict[str, Any]) -> list[str]:
    found = validate(
        args, "modules/compose", root=None, base_path=[], fallback=Place("site.yml"), what="compose"
    )
    return [p.message for p in found]


@pytest.mark.parametrize(
    "args",
    [
        {"src": "a.j2", "dest": "/srv/a/compose.yml"},
        {"dest": "/srv/a/compose.yml", "state": "absent", "remove_file": True},
        {"src": "a.j2", "dest": "/srv/a/compose.yml", "state": "rendered", "vars": {"x": 1}, "mode": "0640"},
        {"src": "a.j2", "dest": "/srv/a/compose.yml", "project": "dev_1", "pull": "never", "timeout": 60},
    ],
)
def test_schema_accepts(args: dict[str, Any]) -> None:
    assert _problems(args) == []


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ({"dest": "/srv/a/compose.yml"}, "needs 'src'"),
        (
            {"src": "a.j2", "dest": "/srv/a/compose.yml", "remove_file": True},
            "only applies to 'state: absent'",
        ),
        ({"src": "a.j2", "dest": "relative/compose.yml"}, "dest"),
        ({"src": "a.j2", "dest": "/srv/a/compose.yml", "project": "Bad Name"}, "project"),
        ({"src": "a.j2", "dest": "/srv/a/compose.yml", "pull": "always"}, "pull"),
        ({"src": "a.j2", "dest": "/srv/a/compose.yml", "state": "running"}, "state"),
    ],
)
def test_schema_rejects(args: dict[str, Any], fragment: str) -> None:
    problems = _problems(args)
    assert problems and any(fragment in p for p in problems), problems
