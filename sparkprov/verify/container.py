"""`container`: run a command inside an image on the host (`docker run --rm`) and judge its output.

    - name: PyTorch in the NGC image sees the GPU
      container: {image: "nvcr.io/nvidia/pytorch:25.11-py3"}     # default command: the torch CUDA check

The container gets the flags NVIDIA uses for its images (`--gpus all --ipc=host --ulimit memlock=-1
--ulimit stack=67108864`) unless `gpu: false`. It runs through the host's docker CLI over the
connection, so it works the same on a remote host. The default command prints one JSON line
(`cuda_available`, `device_count`, `device_name`, `capability`, `torch`, `cuda`) and is expected to
report `cuda_available: true`; other commands are expected to exit 0 unless `expect:` says otherwise.
Measured: `rc`, `stdout`, `stderr`, and `json` (the last line of stdout that is a JSON object).

A host without the NVIDIA container runtime fails with "no NVIDIA container runtime on HOST".
"""

from __future__ import annotations

import json
import os
import shlex
import uuid
from typing import Any

from sparkprov.connection.base import CommandResult, CommandTimeout
from sparkprov.modules.compose import DOCKER_ENV, GPU_ERROR
from sparkprov.verify.base import Step, StepContext, StepResult, judge
from sparkprov.verify.command import output_measurements

DEFAULT_TIMEOUT_S = 600.0  # the image may have to be pulled first
CLEANUP_TIMEOUT_S = 30.0
GPU_FLAGS = ("--gpus", "all", "--ipc=host", "--ulimit", "memlock=-1", "--ulimit", "stack=67108864")
TORCH_CHECK = (
    "import json, torch; ok = torch.cuda.is_available(); "
    "print(json.dumps({'torch': torch.__version__, 'cuda': torch.version.cuda, 'cuda_available': ok, "
    "'device_count': torch.cuda.device_count() if ok else 0, "
    "'device_name': torch.cuda.get_device_name(0) if ok else None, "
    "'capability': '.'.join(map(str, torch.cuda.get_device_capability(0))) if ok else None}))"
)
DEFAULT_COMMAND = ("python", "-c", TORCH_CHECK)
NO_RUNTIME_HINT = (
    "install nvidia-container-toolkit, run `sudo nvidia-ctk runtime configure --runtime=docker` and restart "
    "docker; on a host without an NVIDIA GPU set `gpu: false` on this step"
)


def docker_run_argv(args: dict[str, Any], name: str) -> list[str]:
    """`docker run --rm --name NAME [GPU flags] [-e K] [-v V] [options] IMAGE COMMAND...`."""
    argv = ["docker", "run", "--rm", "--name", name]
    if args.get("gpu", True):
        argv += GPU_FLAGS
    for key in args.get("env") or {}:
        argv += ["-e", str(key)]  # the value travels in the CLI's environment, never in argv
    for volume in args.get("volumes") or []:
        argv += ["-v", str(volume)]
    argv += [str(option) for option in args.get("options") or []]
    return [*argv, str(args["image"]), *command_of(args)]


def command_of(args: dict[str, Any]) -> list[str]:
    command = args.get("command")
    if command is None:
        return list(DEFAULT_COMMAND)
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def last_json_object(stdout: str) -> dict[str, Any] | None:
    """The last stdout line that is a JSON object (images print banners before it)."""
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
    return None


class ContainerStep(Step):
    name = "container"
    json_expect_keys = frozenset({"json"})

    def default_expectations(self, args: dict[str, Any]) -> dict[str, Any]:
        if args.get("command") is None:
            return {"rc": 0, "json": {"cuda_available": True}}
        return {"rc": 0}

    def run(self, args: dict[str, Any], ctx: StepContext) -> StepResult:
        expectations = self.expectations(args)
        name = f"sparkprov-verify-{uuid.uuid4().hex[:12]}"
        argv = docker_run_argv(args, name)
        timeout = float(args.get("timeout") or ctx.timeout or DEFAULT_TIMEOUT_S)
        env = self._environment(args, ctx)
        try:
            result = ctx.conn.run(argv, timeout=timeout, become=ctx.become, env=env)
        except CommandTimeout as exc:
            remove = ["docker", "rm", "--force", name]
            ctx.conn.run(remove, timeout=CLEANUP_TIMEOUT_S, become=ctx.become, env=env)
            return StepResult.fail(f"on {ctx.host}: {exc}; the container was removed")
        problem = _docker_problem(result, ctx.host, args)
        if problem:
            return StepResult.fail(problem, measured={"rc": result.rc}, argv=argv)
        measured, shown = output_measurements(result)
        document = last_json_object(result.stdout)
        if document is not None:
            measured["json"] = document
        return judge(expectations, measured, shown=shown, details={"argv": argv})

    @staticmethod
    def _environment(args: dict[str, Any], ctx: StepContext) -> dict[str, str] | None:
        """The docker CLI's environment: the step's `env` values (read by `-e KEY`) and, when sudo
        would reset it, the variables that point the CLI at its daemon."""
        env = {**ctx.environment, **{str(k): str(v) for k, v in (args.get("env") or {}).items()}}
        if ctx.conn.is_local and ctx.become is not None:
            env = {**{k: os.environ[k] for k in DOCKER_ENV if k in os.environ}, **env}
        return env or None


def _docker_problem(result: CommandResult, host: str, args: dict[str, Any]) -> str | None:
    """Why docker itself (not the command in the container) failed, or None."""
    error = result.stderr.strip()
    gpu = GPU_ERROR.search(error)
    if gpu:
        return (
            f"no NVIDIA container runtime on {host}: docker cannot give the container the GPU "
            f"({gpu.group(0)}); {NO_RUNTIME_HINT}"
        )
    lowered = error.lower()
    if result.rc == 127 and "docker" in lowered and "daemon" not in lowered and "exec" not in lowered:
        return f"the docker CLI is not installed on {host} (needed to run {args['image']}): {error}"
    if result.rc == 125:
        lines = [line.removeprefix("docker: ") for line in error.splitlines() if line.strip()]
        useful = [line for line in lines if not line.startswith("Run 'docker run --help'")]
        return f"docker run {args['image']} failed on {host}: {'; '.join(useful[-2:]) or 'exit code 125'}"
    return None
