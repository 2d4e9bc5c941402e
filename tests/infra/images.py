"""The busybox test image: a static busybox imported into the private dockerd, no internet needed."""

from __future__ import annotations

import tempfile
from pathlib import Path

from tests.infra.dockerd import DockerDaemon
from tests.infra.process import run

BUSYBOX_PACKAGES = ("busybox-static",)
BUSYBOX_IMAGE = "sparkprov-test/busybox:1"
_BUSYBOX = Path("/bin/busybox")
_ETC_FILES = {
    "etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    "etc/group": "root:x:0:\nnogroup:x:65534:\n",
}


def import_busybox_image(dockerd: DockerDaemon, ref: str = BUSYBOX_IMAGE) -> str:
    """Build a static-busybox root filesystem and `docker import` it as `ref` (CMD sh)."""
    with tempfile.TemporaryDirectory(dir=dockerd.root) as tmp:
        rootfs = Path(tmp) / "rootfs"
        build_busybox_rootfs(rootfs)
        archive = Path(tmp) / "rootfs.tar"
        run(["tar", "-C", str(rootfs), "-cf", str(archive), "."])
        dockerd.docker("import", "--change", 'CMD ["sh"]', str(archive), ref)
    return ref


def build_busybox_rootfs(rootfs: Path) -> None:
    """bin/busybox plus one symlink per applet at its usual path (never busybox onto itself)."""
    binary = rootfs / "bin" / "busybox"
    binary.parent.mkdir(parents=True)
    binary.write_bytes(_BUSYBOX.read_bytes())
    binary.chmod(0o755)
    applets = run([str(_BUSYBOX), "--list-full"]).stdout.split()
    for applet in applets:
        link = rootfs / applet
        if link != binary:
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to("/bin/busybox")
    for name, text in _ETC_FILES.items():
        (rootfs / name).parent.mkdir(exist_ok=True)
        (rootfs / name).write_text(text)
    for empty in ("root", "tmp", "proc", "sys", "dev"):
        (rootfs / empty).mkdir(exist_ok=True)
    (rootfs / "tmp").chmod(0o1777)
