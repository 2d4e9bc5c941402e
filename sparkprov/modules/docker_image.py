"""docker_image: an image present (by tag, or by a pinned digest, which wins) or absent on a host.

`check` asks the host's daemon what it holds; only with `check_latest: true` does it also ask the
registry which digest the tag points at now, so a plain plan never touches the network. `apply` pulls
with live progress, or removes. Registry credentials (NGC: user `$oauthtoken`, key from
`NGC_API_KEY`) are read from the controller's environment, registered as secrets and handed to
docker without ever appearing in argv, output or results (see `_docker.py`).

With `distribute: true` (or the play variable `sparkprov_distribute`), a remote host that lacks the
image gets it from a source instead of its registry: the controller or the inventory host named by
`seed` fetches it once per run, and `docker save` there streams into `docker load` on the host over
SSH, with per-host progress; the loaded image ID must equal the source's (see `_distribute.py`).
The check is unchanged: a host that holds the image is converged and skipped. Local hosts pull.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from sparkprov.modules._distribute import (
    CONTROLLER,
    ImageRequest,
    digest_tag,
    distribute_image,
    pinned_tag,
    wanted,
)
from sparkprov.modules._docker import (
    REFERENCE_FORM,
    Credentials,
    DaemonError,
    DockerHost,
    ImageRef,
    LocalImage,
    RegistryError,
    docker_config_credentials,
    docker_host,
    image_failure,
    parse_image,
    registry_digest,
)
from sparkprov.modules.base import Change, Diff, Module, ModuleFailure, Outcome, TaskContext

NGC_USERNAME = "$oauthtoken"
NGC_KEY_VARIABLE = "NGC_API_KEY"
UNKNOWN_DIGEST = "(known after the pull)"


@dataclass(frozen=True)
class Pull:
    ref: ImageRef
    auth: Credentials | None
    timeout: float | None
    seed: str | None = None  # distribute: fetched once on this source ('controller' or a host), copied here
    digest: str | None = None  # check_latest: the registry digest the image must carry


@dataclass(frozen=True)
class Removal:
    ref: ImageRef


def image_ref(args: dict[str, Any]) -> ImageRef:
    try:
        return parse_image(str(args["name"]), args.get("digest"), str(args.get("tag") or "latest"))
    except ValueError as exc:
        raise ModuleFailure(
            f"docker_image name '{args['name']}': {exc}", hint=f"write {REFERENCE_FORM}"
        ) from None


def credentials(args: dict[str, Any], ref: ImageRef, ctx: TaskContext) -> Credentials | None:
    """The login `registry_auth` asks for, its password read from the controller's environment."""
    auth = args.get("registry_auth")
    if auth is None:
        return None
    if auth == "ngc":
        username, variable = NGC_USERNAME, NGC_KEY_VARIABLE
    else:
        username, variable = str(auth["username"]), str(auth["password_env"])
    password = ctx.environment.get(variable) or os.environ.get(variable)
    if not password:
        raise ModuleFailure(
            f"pulling {ref} needs registry credentials, but the environment variable {variable} is not set",
            hint=f"export {variable} before running sparkprov"
            + (" (an NGC API key from ngc.nvidia.com, Setup > API Key)" if auth == "ngc" else ""),
        )
    ctx.secret(password)
    return Credentials(username, password, f"${variable}")


def result_data(ref: ImageRef, image: LocalImage | None, *, pulled: bool) -> dict[str, Any]:
    """What a task reports and registers: the image and what the host holds now."""
    return {
        "image": str(ref),
        "id": image.id if image else None,
        "digest": (image.digest_for(ref) if image else None) or ref.digest,
        "size": image.size if image else None,
        "pulled": pulled,
    }


def _state_text(image: LocalImage | None, digest: str | None) -> str:
    """An image's state as diff text: absent, or present with its id (when local) and digest."""
    if image is None and digest is None:
        return "state: absent\n"
    lines = ["state: present", *([f"id: {image.id}"] if image else []), f"digest: {digest or 'none'}"]
    return "\n".join(lines) + "\n"


def _diff(ref: ImageRef, before: str, after: str) -> Diff:
    return Diff(f"docker image {ref}", before, after)


def _newer_digest(
    args: dict[str, Any], ref: ImageRef, image: LocalImage, ctx: TaskContext, *, distributed: bool = False
) -> tuple[str, Credentials | None] | None:
    """With check_latest, the registry's digest for the tag when the local image is not it (a
    distributed copy of it counts: it carries the digest as a `NAME:sha256-HEX` tag)."""
    if not args.get("check_latest") or ref.digest:
        return None
    auth = credentials(args, ref, ctx)
    query_auth = auth or _config_login(ref, ctx)
    try:
        remote = registry_digest(ref, query_auth, ctx.secret)
    except RegistryError as exc:
        raise image_failure("check the registry for", ref, exc.reason, query_auth) from None
    if remote in image.digests_for(ref) or (distributed and _copy_of(ctx, ref, remote, image)):
        return None
    return remote, auth


def _copy_of(ctx: TaskContext, ref: ImageRef, digest: str, image: LocalImage) -> bool:
    """Whether `image` is a distributed copy of the image with registry digest `digest`."""
    with docker_host(ctx) as docker:
        try:
            copy = docker.inspect(digest_tag(ref, digest))
        except DaemonError as exc:
            raise image_failure("inspect", ref, exc.reason, None) from None
    return copy is not None and copy.id == image.id


def _config_login(ref: ImageRef, ctx: TaskContext) -> Credentials | None:
    """Without registry_auth, the registry query uses the controller's `docker login`, as a pull would."""
    login = docker_config_credentials(ref, ctx.environment)
    if login is not None:
        ctx.secret(login.password)
    return login


def _seed(args: dict[str, Any], ctx: TaskContext) -> str | None:
    """Where a missing image comes from when it is distributed; None: the host pulls it itself."""
    if args.get("state", "present") == "absent" or ctx.conn.is_local:
        return None
    return wanted(args, ctx)


def _from(seed: str) -> str:
    return "the controller" if seed == CONTROLLER else seed


class DockerImageModule(Module):
    name = "docker_image"

    def check(self, args: dict[str, Any], ctx: TaskContext) -> Change | None:
        ref = image_ref(args)
        seed = _seed(args, ctx)
        with docker_host(ctx) as docker:
            image = _inspect(docker, ref, distributed=seed is not None)
        if args.get("state", "present") == "absent":
            return self._removal(ref, image)
        if image is None:
            pull = Pull(ref, credentials(args, ref, ctx), _timeout(args, ctx), seed)
            after = _state_text(None, ref.digest or UNKNOWN_DIGEST)
            diff = _diff(ref, _state_text(None, None), after)
            summary = f"pull {ref}" if seed is None else f"copy {ref} from {_from(seed)} (fetched there once)"
            return Change(summary, [diff], pull, result_data(ref, None, pulled=True))
        newer = _newer_digest(args, ref, image, ctx, distributed=seed is not None)
        if newer is None:
            return None
        remote, auth = newer
        diff = _diff(ref, _state_text(image, image.digest_for(ref)), _state_text(None, remote))
        summary = f"pull newer image {ref}: the registry has {remote}"
        if seed is not None:
            summary = f"copy newer image {ref} from {_from(seed)}: the registry has {remote}"
        pull = Pull(ref, auth, _timeout(args, ctx), seed, remote)
        return Change(summary, [diff], pull, {**result_data(ref, None, pulled=True), "digest": remote})

    @staticmethod
    def _removal(ref: ImageRef, image: LocalImage | None) -> Change | None:
        if image is None:
            return None
        diff = _diff(ref, _state_text(image, image.digest_for(ref)), _state_text(None, None))
        return Change(f"remove {ref}", [diff], Removal(ref), result_data(ref, None, pulled=False))

    def apply(self, change: Change, ctx: TaskContext) -> Outcome:
        action = change.payload
        with docker_host(ctx) as docker:
            if isinstance(action, Removal):
                _remove(docker, action.ref)
                data = result_data(action.ref, None, pulled=False)
                return Outcome(changed=True, msg=f"removed {action.ref}", data=data)
            if action.seed is not None:
                return _distributed(action, ctx)
            image = _pull(docker, action, ctx)
        data = result_data(action.ref, image, pulled=True)
        size = f"{image.layers} layer{'s' if image.layers != 1 else ''}, {_size(image.size)}"
        return Outcome(changed=True, msg=f"pulled {action.ref} ({size})", data=data)

    def unchanged(self, args: dict[str, Any], ctx: TaskContext) -> Outcome:
        ref = image_ref(args)
        seed = _seed(args, ctx)
        with docker_host(ctx) as docker:
            image = _inspect(docker, ref, distributed=seed is not None)
        return Outcome(changed=False, data=result_data(ref, image, pulled=False))


def _distributed(action: Pull, ctx: TaskContext) -> Outcome:
    """Apply a pull as a copy from the seed (see `_distribute.py`)."""
    assert action.seed is not None
    request = ImageRequest(action.ref, action.auth, action.timeout, action.seed, action.digest)
    copy = distribute_image(ctx, request)
    data = result_data(action.ref, copy.image, pulled=True)
    data.update(digest=data["digest"] or copy.digest, source=action.seed)
    return Outcome(changed=True, msg=f"{action.ref} ({_size(copy.image.size)}): {copy.note}", data=data)


def _size(size: int) -> str:
    return f"{size / 1e9:.2f} GB" if size >= 1e9 else f"{size / 1e6:.1f} MB"


def _timeout(args: dict[str, Any], ctx: TaskContext) -> float | None:
    value = args.get("timeout", ctx.timeout)
    return float(value) if value else None


def _inspect(docker: DockerHost, ref: ImageRef, *, distributed: bool = False) -> LocalImage | None:
    """The local image for `ref`: by digest when pinned (it must carry that digest), else by tag.
    A pinned image that was distributed has no registry digest but its `NAME:sha256-HEX` tag."""
    try:
        image = docker.inspect(ref.pull_ref)
        copied = pinned_tag(ref) if distributed else None
        if image is None and copied is not None:
            return docker.inspect(copied)
    except DaemonError as exc:
        raise image_failure("inspect", ref, exc.reason, None) from None
    if image is not None and ref.digest and ref.digest not in image.digests_for(ref):
        return None
    return image


def _pull(docker: DockerHost, pull: Pull, ctx: TaskContext) -> LocalImage:
    what = f"pull {pull.ref}"
    try:
        docker.pull(pull.ref, pull.auth, pull.timeout, lambda done, total: ctx.progress(what, done, total))
    except DaemonError as exc:
        raise image_failure("pull", pull.ref, exc.reason, pull.auth) from None
    image = _inspect(docker, pull.ref)
    if image is None:
        raise ModuleFailure(f"pull {pull.ref} finished but the daemon does not list the image afterwards")
    return image


def _remove(docker: DockerHost, ref: ImageRef) -> None:
    try:
        docker.remove(ref.pull_ref)
    except DaemonError as exc:
        if "conflict" in exc.reason.lower() or "being used" in exc.reason.lower():
            raise ModuleFailure(
                f"remove {ref} failed: {exc.reason}",
                hint=f"remove the containers using it first: `docker ps -a --filter ancestor={ref.pull_ref}`",
            ) from None
        raise image_failure("remove", ref, exc.reason, None) from None
