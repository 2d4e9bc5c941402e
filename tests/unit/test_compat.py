"""Compatibility warnings: one test per rule, each on a small playbook loaded like `sparkprov validate`
loads it, checking the place (the task's line), the message (what, and why from the matrix) and the fix.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from sparkprov.compat import (
    CompatWarning,
    compatibility_warnings,
    format_warning,
    image_repository,
    load_matrix,
    normalize_package,
)
from sparkprov.errors import Place
from sparkprov.playbook.loader import load_playbook
from sparkprov.resources import default_playbook

PYTORCH = "nvcr.io/nvidia/pytorch:25.11-py3"
GB10_REASON = "pip's PyTorch wheels do not see the GB10 GPU"


def warnings_for(tmp_path: Path, playbook: str, files: dict[str, str] | None = None) -> list[CompatWarning]:
    for name, text in (files or {}).items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    site = tmp_path / "site.yml"
    site.write_text(textwrap.dedent(playbook), encoding="utf-8")
    return compatibility_warnings(load_playbook(site))


def line_of(tmp_path: Path, needle: str, name: str = "site.yml") -> int:
    lines = (tmp_path / name).read_text(encoding="utf-8").splitlines()
    return next(i for i, line in enumerate(lines, start=1) if needle in line)


def only(found: list[CompatWarning], rule: str) -> CompatWarning:
    assert [w.rule for w in found] == [rule], "\n".join(format_warning(w) for w in found)
    return found[0]


def play(*tasks: str, vars_: str = "") -> str:
    header = "- hosts: all\n  gather_facts: false\n"
    if vars_:
        header += "  vars:\n" + textwrap.indent(textwrap.dedent(vars_), "    ")
    return header + "  tasks:\n" + "".join(textwrap.indent(textwrap.dedent(t), "    ") for t in tasks)


# ---------------------------------------------------------------- the matrix


def test_matrix_ships_the_course_statuses_with_reasons_and_fixes() -> None:
    matrix = load_matrix()
    statuses = {tool.name.split(" (")[0]: tool.status for tool in matrix.tools.values()}
    assert statuses == {
        "Ollama": "full",
        "llama.cpp": "full",
        "NeMo": "full",
        "PyTorch": "ngc_required",
        "JAX": "ngc_required",
        "Hugging Face stack": "ngc_required",
        "vLLM": "partial",
        "TensorRT-LLM": "partial",
        "DeepSpeed": "partial",
        "Standard pip PyTorch on the host": "not_compatible",
    }
    assert set(matrix.statuses) == {"full", "ngc_required", "partial", "not_compatible"}
    assert all(tool.reason and tool.fix for tool in matrix.tools.values())
    assert "lab 1.1.4" in matrix.source


def test_matrix_lookups() -> None:
    matrix = load_matrix()
    assert normalize_package("Torch[cuda]>=2.5") == "torch"
    assert normalize_package("'jax[cuda12]'") == "jax"
    assert image_repository("docker.io/library/ubuntu:24.04@sha256:" + "0" * 64) == "ubuntu"
    assert image_repository("localhost:5000/nvidia/pytorch") == "localhost:5000/nvidia/pytorch"
    assert matrix.tool_for_image("nvcr.io/nvidia/tensorrt-llm/release:1.0").name == "TensorRT-LLM"  # type: ignore[union-attr]
    assert matrix.is_gpu_image("nvcr.io/nvidia/cuda:13.0-base")
    assert not matrix.is_gpu_image("ghcr.io/open-webui/open-webui:main")
    assert matrix.x86_only("pytorch/pytorch") is not None
    assert matrix.x86_only(PYTORCH) is None


# ---------------------------------------------------------------- command / shell on the host


def test_pip_installing_pytorch_on_the_host(tmp_path: Path) -> None:
    found = warnings_for(
        tmp_path,
        play(
            """\
            - name: torch for notebooks
              shell: sudo -H pip3 install --upgrade 'torch>=2.5' torchvision -i https://example.org/simple
            """
        ),
    )
    warning = only(found, "pip_on_host")
    assert warning.place == Place(str(tmp_path / "site.yml"), line_of(tmp_path, "torch for notebooks"), 7)
    assert warning.message.startswith(
        "task 'torch for notebooks' pip-installs torch, torchvision (PyTorch) on the host: " + GB10_REASON
    )
    assert PYTORCH in warning.fix


def test_pip_installing_jax_through_python_m_pip_in_sh_c(tmp_path: Path) -> None:
    found = warnings_for(
        tmp_path, play("- name: jax\n  command: bash -lc 'python3 -m pip install \"jax[cuda12]\"'\n")
    )
    warning = only(found, "pip_on_host")
    assert "pip-installs jax (JAX) on the host: pip's jax/jaxlib CUDA wheels are not built for the GB10" in (
        warning.message
    )
    assert warning.fix == "run it in the NGC image nvcr.io/nvidia/jax with --gpus all --ipc=host"
    assert warning.place.line == line_of(tmp_path, "- name: jax")


def test_torch_workload_on_the_host(tmp_path: Path) -> None:
    found = warnings_for(
        tmp_path,
        play(
            "- name: train\n  shell: cd /data && torchrun --nproc-per-node 1 train.py\n",
            "- name: probe\n  command: python3 -c 'import torch; print(torch.cuda.is_available())'\n",
        ),
    )
    assert [w.rule for w in found] == ["torch_on_host", "torch_on_host"]
    assert found[0].message.startswith(
        "task 'train' runs a PyTorch workload (torchrun) on the host, outside an NGC container: "
        + GB10_REASON
    )
    assert "python3 -c" in found[1].message
    assert [w.place.line for w in found] == [
        line_of(tmp_path, "name: train"),
        line_of(tmp_path, "name: probe"),
    ]
    assert all(PYTORCH in w.fix for w in found)


def test_the_same_commands_inside_a_container_are_fine(tmp_path: Path) -> None:
    found = warnings_for(
        tmp_path,
        play(
            "- name: in container\n  command: docker exec pt pip install torch\n",
            "- name: sudo docker\n  shell: sudo docker exec -u 0 pt torchrun train.py\n",
        ),
    )
    assert found == []


# ---------------------------------------------------------------- docker run


def test_docker_run_of_a_gpu_image_without_gpus(tmp_path: Path) -> None:
    found = warnings_for(
        tmp_path,
        play(
            "- name: serve\n  command: docker run -d --ipc=host -p 8000:8000 {{ vllm_image }} vllm serve m\n",
            vars_="vllm_image: nvcr.io/nvidia/vllm:25.11-py3\n",
        ),
    )
    warning = only(found, "gpu_access")
    assert warning.message == (
        "docker run in task 'serve' starts nvcr.io/nvidia/vllm:25.11-py3, meant for the GPU, without GPU "
        "access: without it the container sees no GPU and everything runs on the CPU "
        "(torch.cuda.is_available() is False)"
    )
    assert warning.fix == "add --gpus all to docker run"
    assert warning.place.line == line_of(tmp_path, "name: serve")


def test_docker_run_of_pytorch_without_ipc_host(tmp_path: Path) -> None:
    found = warnings_for(
        tmp_path, play(f"- name: shell\n  command: docker run --gpus all --rm -it {PYTORCH} bash\n")
    )
    warning = only(found, "ipc_host")
    assert warning.message.startswith(
        f"docker run in task 'shell' starts the PyTorch image {PYTORCH} without the host IPC namespace: "
        "PyTorch shares tensors between processes"
    )
    assert warning.fix.startswith("add --ipc=host")
    assert warning.place.line == line_of(tmp_path, "name: shell")


def test_the_course_docker_run_is_clean(tmp_path: Path) -> None:
    course = f"""\
        - name: course container
          shell: |
            docker run --gpus all -it --rm \\
                -v $HOME/workspace:/workspace \\
                -v $HOME/.cache/huggingface:/root/.cache/huggingface \\
                --ipc=host \\
                {PYTORCH} \\
                bash
        """
    assert warnings_for(tmp_path, play(course)) == []


def test_docker_run_of_an_amd64_only_image(tmp_path: Path) -> None:
    found = warnings_for(
        tmp_path,
        play(
            "- name: tgi\n"
            "  command: docker run --gpus all ghcr.io/huggingface/text-generation-inference:3.0\n"
        ),
    )
    warning = only(found, "x86_only")
    assert warning.message.startswith(
        "docker run in task 'tgi' uses ghcr.io/huggingface/text-generation-inference:3.0, which is built for "
        "amd64 only (https://github.com/huggingface/text-generation-inference/issues/2332): the DGX Spark is "
        "aarch64 (arm64)"
    )
    assert warning.fix == "use an arm64 or multi-arch image instead: nvcr.io/nvidia/vllm or Ollama"


# ---------------------------------------------------------------- docker_image


def test_docker_image_amd64_only_images_in_a_loop(tmp_path: Path) -> None:
    found = warnings_for(
        tmp_path,
        play(
            """\
            - name: pull images
              docker_image: {name: "{{ item }}"}
              loop: "{{ images }}"
            """,
            vars_=f'images: [pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime, "{PYTORCH}", acme/t:1.2-amd64]\n',
        ),
    )
    assert [w.rule for w in found] == ["x86_only", "x86_only"]
    assert found[0].message.startswith(
        "task 'pull images' uses pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime, which is built for amd64 "
        "only (https://github.com/pytorch/pytorch/issues/145716)"
    )
    assert found[0].fix == f"use an arm64 or multi-arch image instead: {PYTORCH}"
    assert "acme/t:1.2-amd64, which is built for amd64 only (its tag '1.2-amd64' names an amd64 build)" in (
        found[1].message
    )
    assert {w.place.line for w in found} == {line_of(tmp_path, "name: pull images")}


# ---------------------------------------------------------------- compose templates

COMPOSE_TASK = """\
- name: dev stack
  compose: {src: stack.yml.j2, dest: /opt/stack/compose.yml}
"""


def test_compose_gpu_service_without_a_reservation(tmp_path: Path) -> None:
    template = """\
        services:
          llm:
            image: "{{ vllm_image }}"
            ipc: host
            ports: ["8000:8000"]
          ui:
            image: ghcr.io/open-webui/open-webui:main
        """
    found = warnings_for(
        tmp_path,
        play(COMPOSE_TASK, vars_="vllm_image: nvcr.io/nvidia/vllm:25.11-py3\n"),
        {"templates/stack.yml.j2": template},
    )
    warning = only(found, "gpu_access")
    compose_place = (
        f"{tmp_path / 'templates/stack.yml.j2'}:{line_of(tmp_path, 'llm:', 'templates/stack.yml.j2')}:3"
    )
    assert warning.message.startswith(
        f"compose service 'llm' ({compose_place}) starts nvcr.io/nvidia/vllm:25.11-py3, meant for the GPU, "
        "without GPU access: without it the container sees no GPU"
    )
    assert warning.fix.startswith(
        "add to the service: deploy: {resources: {reservations: {devices: [{driver: nvidia"
    )
    assert warning.place.line == line_of(tmp_path, "name: dev stack")


def test_compose_pytorch_service_without_ipc_host(tmp_path: Path) -> None:
    template = """\
        services:
          {{ name | default('pytorch') }}:
            image: {{ image | default('nvcr.io/nvidia/pytorch:25.11-py3') | tojson }}
        {% if gpu | default(true) %}
            deploy:
              resources:
                reservations:
                  devices: [{driver: nvidia, count: all, capabilities: [gpu]}]
        {% endif %}
        """
    found = warnings_for(tmp_path, play(COMPOSE_TASK), {"templates/stack.yml.j2": template})
    warning = only(found, "ipc_host")
    assert warning.message.startswith(
        f"compose service 'pytorch' ({tmp_path / 'templates/stack.yml.j2'}:2:3) starts the PyTorch image "
        f"{PYTORCH} without the host IPC namespace: PyTorch shares tensors"
    )
    assert warning.fix == "add ipc: host to the service"


def test_compose_values_a_template_hides_are_not_judged(tmp_path: Path) -> None:
    template = """\
        services:
          a:
            image: "{{ undefined_image }}"
          b:
            image: nvcr.io/nvidia/pytorch:{{ tag }}
            ipc: "{{ ipc_mode }}"
            deploy: {{ deploy | to_nice_yaml }}
        """
    found = warnings_for(tmp_path, play(COMPOSE_TASK), {"templates/stack.yml.j2": template})
    assert found == []


# ---------------------------------------------------------------- clean playbooks and output


def test_a_spark_ready_playbook_has_no_warnings(tmp_path: Path) -> None:
    playbook = play(
        "- name: ngc image\n  docker_image: {name: '{{ pytorch_image }}', registry_auth: ngc}\n",
        "- name: bundled dev container\n  compose: {src: compose/pytorch-dev.yml.j2, dest: /opt/dev/c.yml}\n",
        "- name: gpu\n  command: nvidia-smi\n",
        "- name: notebooks deps inside the container\n  command: docker exec dev pip install transformers\n",
        "- name: check torch\n"
        f"  command: docker run --rm --gpus all --ipc=host {PYTORCH} python -c 'import torch'\n",
        "- name: ollama image\n  shell: docker run -d --gpus=all -p 11434:11434 ollama/ollama\n",
        vars_=f"pytorch_image: {PYTORCH}\n",
    )
    assert warnings_for(tmp_path, playbook) == []


def test_the_bundled_playbook_has_no_warnings() -> None:
    assert compatibility_warnings(load_playbook(default_playbook())) == []


def test_format_warning() -> None:
    warning = CompatWarning(Place("site.yml", 12, 7), "task 't' does x: because", "do y", "pip_on_host")
    assert format_warning(warning) == "site.yml:12:7: warning: task 't' does x: because\n  fix: do y"


@pytest.mark.parametrize(
    "command",
    [
        "pip install -r requirements.txt",
        "pip download torch",
        "echo pip install torch",
        "python3 train.py",
        "docker compose run --rm app pip install torch",
    ],
)
def test_what_cannot_be_told_statically_is_not_flagged(tmp_path: Path, command: str) -> None:
    assert warnings_for(tmp_path, play(f"- name: t\n  shell: {command}\n")) == []
