"""Host facts: parsing sample probe outputs, and one real probe of this machine."""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import time
from typing import Any

import pytest

from sparkprov.connection.base import Become, CommandResult, Connection
from sparkprov.facts.host import (
    ANSIBLE_FACT_NAMES,
    HOST_PROBE_SCRIPT,
    UNIFIED_MEMORY_NOTE,
    GpuInfo,
    HostFacts,
    HostFactsError,
    gather_host_facts,
    parse_probe_output,
)

# What the probe prints on a DGX Spark (GB10, DGX OS = Ubuntu 24.04 aarch64, CUDA 13).
SPARK_OUTPUT = """
@@sparkprov begin
1

@@sparkprov hostname
spark-01

@@sparkprov fqdn
spark-01.lab.example.com

@@sparkprov kernel
6.11.0-1016-nvidia

@@sparkprov arch
aarch64

@@sparkprov os-release
PRETTY_NAME="Ubuntu 24.04.3 LTS"
NAME="Ubuntu"
VERSION_ID="24.04"
VERSION="24.04.3 LTS (Noble Numbat)"
VERSION_CODENAME=noble
ID=ubuntu
ID_LIKE=debian
HOME_URL="https://www.ubuntu.com/"

@@sparkprov cpus
20

@@sparkprov meminfo
MemTotal:       125550436 kB
MemFree:        98765432 kB
MemAvailable:   119876544 kB
SwapTotal:      16777212 kB
CmaTotal:          65536 kB

@@sparkprov machine-id
0f3c2a9e8d7b4c1a9e8d7b4c1a9e8d7b

@@sparkprov python
Python 3.12.3

@@sparkprov user
nvidia

@@sparkprov uid
1000

@@sparkprov container
0

@@sparkprov systemd
1

@@sparkprov gpu-query
NVIDIA GB10, 580.95.05, [N/A]

@@sparkprov gpu-cuda
| NVIDIA-SMI 580.95.05              Driver Version: 580.95.05      CUDA Version: 13.0     |

@@sparkprov docker
28.3.3
{"io.containerd.runc.v2":{"path":"runc","status":{"org.opencontainers.runtime-spec.features":"{}"}},\
"nvidia":{"path":"nvidia-container-runtime"},"runc":{"path":"runc"}}

@@sparkprov end
1
""".replace("\\\n", "")


def probe_output(**sections: str) -> str:
    """Frame sections the way HOST_PROBE_SCRIPT does (a minimal valid host unless overridden)."""
    base = {
        "begin": "1",
        "hostname": "node",
        "kernel": "6.8.0-45-generic",
        "arch": "x86_64",
        "cpus": "8",
        "meminfo": "MemTotal: 1000 kB\nMemAvailable: 500 kB",
        "uid": "0",
        "user": "root",
    }
    base.update(sections)
    base.pop("end", None)
    body = "".join(f"\n@@sparkprov {name}\n{text}\n" for name, text in base.items())
    return body + "\n@@sparkprov end\n1\n"


def test_spark_gb10() -> None:
    facts = parse_probe_output(SPARK_OUTPUT)
    assert facts.hostname == "spark-01"
    assert facts.fqdn == "spark-01.lab.example.com"
    assert (facts.os_id, facts.os_version, facts.os_pretty) == ("ubuntu", "24.04", "Ubuntu 24.04.3 LTS")
    assert facts.arch == "aarch64"
    assert facts.kernel == "6.11.0-1016-nvidia"
    assert facts.cpu_count == 20
    assert facts.mem_total_kib == 125550436
    assert facts.mem_available_kib == 119876544
    assert facts.swap_total_kib == 16777212
    assert facts.cma_total_kib == 65536
    assert facts.gpus == (GpuInfo("NVIDIA GB10", "580.95.05", "13.0", None, UNIFIED_MEMORY_NOTE),)
    assert facts.gpus[0].memory_total_mib is None  # never 0 on unified memory
    assert facts.docker_version == "28.3.3"
    assert facts.docker_runtimes == ("io.containerd.runc.v2", "nvidia", "runc")
    assert facts.machine_id == "0f3c2a9e8d7b4c1a9e8d7b4c1a9e8d7b"
    assert facts.python == "3.12.3"
    assert (facts.user, facts.uid) == ("nvidia", 1000)
    assert facts.in_container is False
    assert facts.systemd is True


def test_spark_ansible_facts() -> None:
    ansible = parse_probe_output(SPARK_OUTPUT).as_ansible_facts()
    assert ansible["ansible_hostname"] == "spark-01"
    assert ansible["ansible_fqdn"] == "spark-01.lab.example.com"
    assert ansible["ansible_architecture"] == "aarch64"
    assert ansible["ansible_kernel"] == "6.11.0-1016-nvidia"
    assert ansible["ansible_distribution"] == "Ubuntu"
    assert ansible["ansible_distribution_version"] == "24.04"
    assert ansible["ansible_distribution_major_version"] == "24"
    assert ansible["ansible_os_family"] == "Debian"
    assert ansible["ansible_processor_vcpus"] == 20
    assert ansible["ansible_memtotal_mb"] == 125550436 // 1024
    assert ansible["ansible_memfree_mb"] == 119876544 // 1024
    assert ansible["ansible_machine_id"] == "0f3c2a9e8d7b4c1a9e8d7b4c1a9e8d7b"
    assert ansible["ansible_user_id"] == "nvidia"
    assert ansible["ansible_user_uid"] == 1000
    assert ansible["ansible_service_mgr"] == "systemd"
    nested = ansible["ansible_facts"]
    assert {f"ansible_{key}" for key in nested} | {"ansible_facts"} == set(ansible)
    assert all(ansible[f"ansible_{key}"] == value for key, value in nested.items())
    assert set(ansible) == ANSIBLE_FACT_NAMES


def test_as_dict_is_json_ready() -> None:
    facts = parse_probe_output(SPARK_OUTPUT)
    data = json.loads(json.dumps(facts.as_dict()))
    assert data["gpus"] == [
        {
            "name": "NVIDIA GB10",
            "driver": "580.95.05",
            "cuda": "13.0",
            "memory_total_mib": None,
            "memory_note": UNIFIED_MEMORY_NOTE,
        }
    ]
    assert data["docker_runtimes"] == ["io.containerd.runc.v2", "nvidia", "runc"]
    assert data["cma_total_kib"] == 65536
    assert data["hostname"] == "spark-01"


def test_h100_host() -> None:
    out = probe_output(
        **{
            "os-release": 'ID="rocky"\nID_LIKE="rhel centos fedora"\nVERSION_ID="9.4"\n'
            'PRETTY_NAME="Rocky Linux 9.4 (Blue Onyx)"',
            "gpu-query": "NVIDIA H100 80GB HBM3, 550.90.07, 81559\nNVIDIA H100 80GB HBM3, 550.90.07, 81559",
            "gpu-cuda": "| NVIDIA-SMI 550.90.07    Driver Version: 550.90.07    CUDA Version: 12.4     |",
            "docker": '27.1.1\n{"nvidia":{"path":"nvidia-container-runtime"},"runc":{"path":"runc"}}',
        }
    )
    facts = parse_probe_output(out)
    assert len(facts.gpus) == 2
    assert facts.gpus[0] == GpuInfo("NVIDIA H100 80GB HBM3", "550.90.07", "12.4", 81559, None)
    assert facts.docker_runtimes == ("nvidia", "runc")
    assert facts.cma_total_kib is None
    ansible = facts.as_ansible_facts()
    assert ansible["ansible_distribution"] == "Rocky"
    assert ansible["ansible_os_family"] == "RedHat"


def test_no_gpu_no_docker() -> None:
    facts = parse_probe_output(probe_output(systemd="0", container="1"))
    assert facts.gpus == ()
    assert facts.docker_version is None
    assert facts.docker_runtimes == ()
    assert facts.fqdn is None
    assert facts.machine_id is None
    assert facts.python is None
    assert (facts.os_id, facts.os_version) == ("linux", "")  # os-release defaults when it is missing
    assert facts.in_container is True
    assert facts.systemd is False
    assert facts.as_ansible_facts()["ansible_service_mgr"] != "systemd"


def test_broken_gpu_and_unreachable_docker_give_empty_values() -> None:
    out = probe_output(
        **{
            "gpu-query": "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
            "Make sure that the latest NVIDIA driver is installed and running.",
            "gpu-cuda": "",
            "docker": "\nnull",  # docker info when the daemon is down or the socket is not ours
        }
    )
    facts = parse_probe_output(out)
    assert facts.gpus == ()
    assert (facts.docker_version, facts.docker_runtimes) == (None, ())


@pytest.mark.parametrize("raw", ["[Not Supported]", "[N/A]", "N/A"])
def test_gpu_memory_not_supported_is_none_not_zero(raw: str) -> None:
    facts = parse_probe_output(probe_output(**{"gpu-query": f"NVIDIA GB10, 580.95.05, {raw}"}))
    assert facts.gpus[0].memory_total_mib is None
    assert facts.gpus[0].memory_note == UNIFIED_MEMORY_NOTE


def test_values_with_equals_and_spaces() -> None:
    out = probe_output(
        **{
            "os-release": 'ID=weird\nPRETTY_NAME="A = B  \\"quoted\\" OS"\nVERSION_ID=1=2',
            "user": "domain user=x",
            "meminfo": "MemTotal:  2048 kB\nMemFree:  1024 kB",  # no MemAvailable: old kernel
        }
    )
    facts = parse_probe_output(out)
    assert facts.os_pretty == 'A = B  "quoted" OS'
    assert facts.os_version == "1=2"
    assert facts.user == "domain user=x"
    assert facts.mem_available_kib == 1024


@pytest.mark.parametrize(
    ("stdout", "message"),
    [
        ("", "not host probe output"),
        ("bash: /bin/sh: No such file or directory\n", "not host probe output"),
        ("\x00\x01garbage=1\nfoo bar\n", "not host probe output"),
        ("@@sparkprov begin\n1\n@@sparkprov hostname\nh\n", "truncated"),
        (probe_output(meminfo=""), "MemTotal"),
        (probe_output(uid="root"), "'uid' is not an integer"),
        (probe_output(hostname=""), "no value for 'hostname'"),
    ],
)
def test_garbage_raises_value_error(stdout: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_probe_output(stdout)


class FakeConnection(Connection):
    host_name = "fake"

    def __init__(self, stdout: str, rc: int = 0, stderr: str = "") -> None:
        self.calls: list[list[str]] = []
        self.result = (stdout, rc, stderr)

    def run(self, argv: list[str], **kwargs: Any) -> CommandResult:
        self.calls.append(argv)
        stdout, rc, stderr = self.result
        return CommandResult(tuple(argv), rc, stdout, stderr, 0.01)

    def agent(self, ops: list[dict[str, Any]], *, become: Become | None = None) -> list[dict[str, Any]]:
        raise NotImplementedError


def test_gather_is_one_round_trip() -> None:
    conn = FakeConnection(SPARK_OUTPUT)
    facts = gather_host_facts(conn)
    assert facts.hostname == "spark-01"
    assert conn.calls == [["/bin/sh", "-c", HOST_PROBE_SCRIPT]]


def test_gather_error_names_the_host() -> None:
    conn = FakeConnection("", rc=127, stderr="sh: not found")
    with pytest.raises(HostFactsError, match=r"^fake: .*exited 127.*sh: not found") as info:
        gather_host_facts(conn)
    assert info.value.host == "fake"


class SubprocessConnection(Connection):
    """Just enough of a local connection to run the probe for real (no shell, argv as is)."""

    host_name = "localhost"

    def run(
        self,
        argv: list[str],
        *,
        stdin: bytes | None = None,
        timeout: float | None = None,
        become: Become | None = None,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
    ) -> CommandResult:
        start = time.monotonic()
        proc = subprocess.run(argv, input=stdin, capture_output=True, timeout=timeout, cwd=cwd, env=env)
        return CommandResult(
            tuple(argv),
            proc.returncode,
            proc.stdout.decode(errors="replace"),
            proc.stderr.decode(errors="replace"),
            time.monotonic() - start,
        )

    def agent(self, ops: list[dict[str, Any]], *, become: Become | None = None) -> list[dict[str, Any]]:
        raise NotImplementedError


def _meminfo_kib(key: str) -> int:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    raise AssertionError(f"{key} not in /proc/meminfo")


@pytest.mark.skipif(not os.path.exists("/proc/meminfo"), reason="needs Linux")
def test_real_probe_on_this_machine() -> None:
    start = time.monotonic()
    facts = gather_host_facts(SubprocessConnection())
    elapsed = time.monotonic() - start
    assert isinstance(facts, HostFacts)
    assert facts.hostname == socket.gethostname()
    assert facts.arch == platform.machine()
    assert facts.kernel == platform.release()
    assert facts.cpu_count == os.cpu_count()
    assert facts.mem_total_kib == _meminfo_kib("MemTotal")
    assert 0 < facts.mem_available_kib <= facts.mem_total_kib
    assert facts.uid == os.getuid()
    assert facts.systemd == os.path.isdir("/run/systemd/system")
    assert all(gpu.memory_total_mib is None or gpu.memory_total_mib > 0 for gpu in facts.gpus)
    json.dumps(facts.as_dict())
    assert elapsed < 25
