"""Host facts gathered in one round trip.

`HOST_PROBE_SCRIPT` is a POSIX `sh` script run as `/bin/sh -c SCRIPT` through `Connection.run`, so the
local and SSH transports cost exactly one command per host. Every sub-command is guarded: a missing tool
leaves its section empty instead of failing the probe, and the slow or hang-prone tools (`nvidia-smi`,
`docker`, `hostname -f`) run under `timeout` when the host has one.

Output framing: the script prints sections, each introduced by a marker line
``@@sparkprov <name>`` followed by the raw output of one command (any number of lines, any
characters). The first section is ``begin`` and the last is ``end``; a missing ``end`` means the output
was cut short. Values are never split on ``=`` or spaces by the framing itself, so they may contain both.

`parse_probe_output` is pure and turns that text into a `HostFacts`; `gather_host_facts` runs the probe.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import asdict, dataclass
from typing import Any

from sparkprov.connection.base import Connection

PROBE_VERSION = "1"
MARKER = "@@sparkprov "

UNIFIED_MEMORY_NOTE = "unified memory, not reported by NVML"

HOST_PROBE_SCRIPT = r"""LC_ALL=C; export LC_ALL
PATH="${PATH:-/usr/bin:/bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"; export PATH
s() { printf '\n@@sparkprov %s\n' "$1"; }
have() { command -v "$1" >/dev/null 2>&1; }
T=; TH=
if timeout -k 2 1 true >/dev/null 2>&1; then T='timeout -k 2 5'; TH='timeout -k 1 2'
elif timeout 1 true >/dev/null 2>&1; then T='timeout 5'; TH='timeout 2'
fi
s begin; echo 1
s hostname; uname -n 2>/dev/null
s fqdn; have hostname && $TH hostname -f 2>/dev/null
s kernel; uname -r 2>/dev/null
s arch; uname -m 2>/dev/null
s os-release; cat /etc/os-release 2>/dev/null || cat /usr/lib/os-release 2>/dev/null
s cpus; getconf _NPROCESSORS_ONLN 2>/dev/null || grep -c '^processor' /proc/cpuinfo 2>/dev/null
s meminfo; grep -E '^(MemTotal|MemFree|MemAvailable|SwapTotal|CmaTotal):' /proc/meminfo 2>/dev/null
s machine-id; cat /etc/machine-id 2>/dev/null || cat /var/lib/dbus/machine-id 2>/dev/null
s python; { have python3 && python3 -V 2>&1; } || { have python && python -V 2>&1; }
s user; id -un 2>/dev/null || printf '%s\n' "${USER:-}"
s uid; id -u 2>/dev/null
s container
if [ -e /.dockerenv ] || [ -e /run/.containerenv ] \
   || grep -qE 'docker|kubepods|containerd|libpod|lxc' /proc/1/cgroup 2>/dev/null
then echo 1; else echo 0; fi
s systemd; if [ -d /run/systemd/system ]; then echo 1; else echo 0; fi
if have nvidia-smi; then
  s gpu-query
  $T nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader,nounits 2>/dev/null
  s gpu-cuda; $T nvidia-smi 2>/dev/null | grep 'CUDA Version'
fi
if have docker; then
  s docker; $T docker info --format '{{.ServerVersion}}{{"\n"}}{{json .Runtimes}}' 2>/dev/null
fi
s end; echo 1
exit 0
"""

# os-release ID -> the name Ansible reports as ansible_distribution.
_DISTRIBUTION_NAMES = {
    "ubuntu": "Ubuntu",
    "debian": "Debian",
    "raspbian": "Debian",
    "linuxmint": "Linux Mint",
    "pop": "Pop!_OS",
    "centos": "CentOS",
    "rhel": "RedHat",
    "fedora": "Fedora",
    "rocky": "Rocky",
    "almalinux": "AlmaLinux",
    "ol": "OracleLinux",
    "amzn": "Amazon",
    "opensuse-leap": "openSUSE Leap",
    "opensuse-tumbleweed": "openSUSE Tumbleweed",
    "sles": "SLES",
    "arch": "Archlinux",
    "alpine": "Alpine",
    "gentoo": "Gentoo",
}

# os-release ID (or an ID_LIKE entry) -> ansible_os_family.
_OS_FAMILIES = {
    "debian": "Debian",
    "ubuntu": "Debian",
    "raspbian": "Debian",
    "linuxmint": "Debian",
    "pop": "Debian",
    "rhel": "RedHat",
    "centos": "RedHat",
    "fedora": "RedHat",
    "rocky": "RedHat",
    "almalinux": "RedHat",
    "ol": "RedHat",
    "amzn": "RedHat",
    "suse": "Suse",
    "sles": "Suse",
    "opensuse": "Suse",
    "opensuse-leap": "Suse",
    "opensuse-tumbleweed": "Suse",
    "arch": "Archlinux",
    "alpine": "Alpine",
    "gentoo": "Gentoo",
}

_DRIVER_RE = re.compile(r"^\d+(\.\d+)+$")
_CUDA_RE = re.compile(r"CUDA Version\s*:\s*([0-9][0-9.]*)")
_PYTHON_RE = re.compile(r"^Python\s+(\S+)")
_DOCKER_VERSION_RE = re.compile(r"^\d[\w.+~-]*$")
_LEADING_INT_RE = re.compile(r"^\s*(\d+)")


class HostFactsError(ValueError):
    """The probe ran but its output could not be turned into facts; carries the host."""

    def __init__(self, host: str, message: str) -> None:
        super().__init__(f"{host}: {message}")
        self.host = host
        self.message = message


@dataclass(frozen=True)
class GpuInfo:
    name: str
    driver: str | None
    cuda: str | None
    memory_total_mib: int | None
    memory_note: str | None = None  # why memory_total_mib is None; never reported as 0


@dataclass(frozen=True)
class HostFacts:
    hostname: str
    fqdn: str | None
    os_id: str
    os_version: str
    os_pretty: str
    arch: str
    kernel: str
    cpu_count: int
    mem_total_kib: int
    mem_available_kib: int
    swap_total_kib: int
    cma_total_kib: int | None
    gpus: tuple[GpuInfo, ...]
    docker_version: str | None
    docker_runtimes: tuple[str, ...]
    machine_id: str | None
    python: str | None
    user: str
    uid: int
    in_container: bool
    systemd: bool
    os_like: tuple[str, ...] = ()  # os-release ID_LIKE, for the OS family of derivatives

    @property
    def distribution(self) -> str:
        return _DISTRIBUTION_NAMES.get(self.os_id, self.os_id.capitalize() or "Linux")

    @property
    def os_family(self) -> str:
        for candidate in (self.os_id, *self.os_like):
            if candidate in _OS_FAMILIES:
                return _OS_FAMILIES[candidate]
        return self.distribution

    def as_ansible_facts(self) -> dict[str, Any]:
        """Ansible-named facts (`ansible_*`) plus the same under `ansible_facts` without the prefix."""
        plain = _ansible_plain_facts(self)
        facts: dict[str, Any] = {f"ansible_{key}": value for key, value in plain.items()}
        facts["ansible_facts"] = dict(plain)
        return facts

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists) for `sparkprov facts --format json`."""
        data = asdict(self)
        data["gpus"] = [asdict(gpu) for gpu in self.gpus]
        data["docker_runtimes"] = list(self.docker_runtimes)
        data["os_like"] = list(self.os_like)
        return data


def _ansible_plain_facts(facts: HostFacts) -> dict[str, Any]:
    major = facts.os_version.split(".", 1)[0]
    return {
        "hostname": facts.hostname.split(".", 1)[0],
        "nodename": facts.hostname,
        "fqdn": facts.fqdn or facts.hostname,
        "system": "Linux",
        "architecture": facts.arch,
        "machine": facts.arch,
        "kernel": facts.kernel,
        "distribution": facts.distribution,
        "distribution_version": facts.os_version,
        "distribution_major_version": major,
        "os_family": facts.os_family,
        "processor_vcpus": facts.cpu_count,
        "memtotal_mb": facts.mem_total_kib // 1024,
        "memfree_mb": facts.mem_available_kib // 1024,
        "swaptotal_mb": facts.swap_total_kib // 1024,
        "machine_id": facts.machine_id,
        "python_version": facts.python,
        "user_id": facts.user,
        "user_uid": facts.uid,
        "service_mgr": "systemd" if facts.systemd else "service",
    }


# Every name `as_ansible_facts` defines, for static "is this variable defined?" checks before any host
# is contacted.
def _fact_names() -> frozenset[str]:
    blank = HostFacts(
        hostname="h", fqdn=None, os_id="linux", os_version="", os_pretty="", arch="", kernel="",
        cpu_count=0, mem_total_kib=0, mem_available_kib=0, swap_total_kib=0, cma_total_kib=None, gpus=(),
        docker_version=None, docker_runtimes=(), machine_id=None, python=None, user="", uid=0,
        in_container=False, systemd=False,
    )  # fmt: skip
    return frozenset(blank.as_ansible_facts())


ANSIBLE_FACT_NAMES: frozenset[str] = _fact_names()


def gather_host_facts(conn: Connection, *, timeout: float = 30.0) -> HostFacts:
    """Run the probe on `conn`'s host (one `run` call) and parse it."""
    result = conn.run(["/bin/sh", "-c", HOST_PROBE_SCRIPT], timeout=timeout)
    host = getattr(conn, "host_name", "?")
    try:
        return parse_probe_output(result.stdout)
    except ValueError as exc:
        detail = f"host facts probe exited {result.rc}: {exc}"
        stderr = result.stderr.strip()
        if stderr:
            detail += f" (stderr: {stderr[-500:]})"
        raise HostFactsError(host, detail) from exc


def parse_probe_output(stdout: str) -> HostFacts:
    """Turn `HOST_PROBE_SCRIPT`'s output into `HostFacts`; ValueError when it is not probe output."""
    sections = _split_sections(stdout)
    meminfo = _parse_meminfo(sections.get("meminfo", ""))
    os_release = _parse_os_release(sections.get("os-release", ""))
    uid = _required_int(sections, "uid")
    docker_version, docker_runtimes = _parse_docker(sections.get("docker", ""))
    return HostFacts(
        hostname=_required_line(sections, "hostname"),
        fqdn=_first_line(sections.get("fqdn", "")) or None,
        os_id=os_release.get("ID", "linux").lower(),
        os_version=os_release.get("VERSION_ID", ""),
        os_pretty=os_release.get("PRETTY_NAME", "Linux"),
        os_like=tuple(os_release.get("ID_LIKE", "").lower().split()),
        arch=_required_line(sections, "arch"),
        kernel=_required_line(sections, "kernel"),
        cpu_count=_required_int(sections, "cpus"),
        mem_total_kib=meminfo["MemTotal"],
        mem_available_kib=meminfo.get("MemAvailable", meminfo.get("MemFree", 0)),
        swap_total_kib=meminfo.get("SwapTotal", 0),
        cma_total_kib=meminfo.get("CmaTotal"),
        gpus=_parse_gpus(sections.get("gpu-query", ""), sections.get("gpu-cuda", "")),
        docker_version=docker_version,
        docker_runtimes=docker_runtimes,
        machine_id=_first_line(sections.get("machine-id", "")) or None,
        python=_parse_python(sections.get("python", "")),
        user=_first_line(sections.get("user", "")) or str(uid),
        uid=uid,
        in_container=_flag(sections, "container"),
        systemd=_flag(sections, "systemd"),
    )


def _split_sections(stdout: str) -> dict[str, str]:
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in stdout.splitlines():
        if line.startswith(MARKER):
            current = sections.setdefault(line[len(MARKER) :].strip(), [])
            current.clear()
        elif current is not None:
            current.append(line)
    if "begin" not in sections:
        snippet = stdout.strip()[:200]
        raise ValueError(f"not host probe output (no '{MARKER}begin' marker); got: {snippet!r}")
    if "end" not in sections:
        raise ValueError("host probe output is truncated (no end marker): the probe was cut short")
    return {name: "\n".join(lines).strip("\n") for name, lines in sections.items()}


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


def _required_line(sections: dict[str, str], name: str) -> str:
    value = _first_line(sections.get(name, ""))
    if not value:
        raise ValueError(f"host probe output has no value for '{name}'")
    return value


def _required_int(sections: dict[str, str], name: str) -> int:
    value = _required_line(sections, name)
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"host probe value for '{name}' is not an integer: {value!r}") from None


def _flag(sections: dict[str, str], name: str) -> bool:
    return _first_line(sections.get(name, "")) == "1"


def _parse_meminfo(text: str) -> dict[str, int]:
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, sep, rest = line.partition(":")
        match = _LEADING_INT_RE.match(rest)
        if sep and match:
            values[key.strip()] = int(match.group(1))
    if "MemTotal" not in values:
        raise ValueError("host probe found no MemTotal in /proc/meminfo (is this a Linux host?)")
    return values


def _parse_os_release(text: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, raw = line.partition("=")
        try:
            value = " ".join(shlex.split(raw))
        except ValueError:
            value = raw.strip().strip("\"'")
        values[key.strip()] = value
    return values


def _parse_python(text: str) -> str | None:
    match = _PYTHON_RE.match(_first_line(text))
    return match.group(1) if match else None


def _parse_gpus(query: str, header: str) -> tuple[GpuInfo, ...]:
    cuda_match = _CUDA_RE.search(header)
    cuda = cuda_match.group(1) if cuda_match else None
    gpus = []
    for line in query.splitlines():
        parts = [part.strip() for part in line.rsplit(",", 2)]
        if len(parts) != 3 or not parts[0] or not _DRIVER_RE.match(parts[1]):
            continue  # an nvidia-smi error message, "No devices were found", ...
        name, driver, memory = parts
        memory_mib, note = _parse_gpu_memory(memory)
        gpus.append(GpuInfo(name, driver, cuda, memory_mib, note))
    return tuple(gpus)


def _parse_gpu_memory(raw: str) -> tuple[int | None, str | None]:
    match = _LEADING_INT_RE.match(raw)
    if match and int(match.group(1)) > 0:
        return int(match.group(1)), None
    lowered = raw.lower()
    if "n/a" in lowered or "not supported" in lowered:
        return None, UNIFIED_MEMORY_NOTE
    return None, f"not reported by nvidia-smi ({raw or 'empty'})"


def _parse_docker(text: str) -> tuple[str | None, tuple[str, ...]]:
    lines = [line.strip() for line in text.splitlines()]
    version = lines[0] if lines else ""
    if not _DOCKER_VERSION_RE.match(version):
        return None, ()  # no daemon, or no permission to reach it
    try:
        runtimes = json.loads(lines[1]) if len(lines) > 1 else None
    except ValueError:
        runtimes = None
    return version, tuple(sorted(runtimes)) if isinstance(runtimes, dict) else ()
