"""Inventories: Ansible's INI and YAML formats, ranges, children, variable precedence (with
`group_vars/` and `host_vars/`), host patterns, and errors that name file and line.

Where ansible-core is installed next to the repository (`.venv-ansible`), the sample inventories are
also read by Ansible itself and the two readings compared.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from sparkprov.errors import InputError, Problem
from sparkprov.inventory import Host, Inventory, implicit_localhost, load_inventory, load_vars_dirs
from sparkprov.inventory.hostnames import expand_host
from sparkprov.inventory.model import InventoryProblem

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "inventories"
LAB_INI = ROOT / "inventories" / "lab.ini"
LAB_YML = ROOT / "inventories" / "lab.yml"
VARS_DIRS = DATA / "vars_dirs"
ANSIBLE_PYTHON = ROOT / ".venv-ansible" / "bin" / "python"

SPARKS = [f"spark0{n}" for n in range(1, 9)]


def view(inventory: Inventory) -> dict[str, Any]:
    """What the rest of sparkprov sees of an inventory."""
    return {
        "hosts": list(inventory.hosts),
        "groups": {name: inventory.members(name) for name in inventory.groups},
        "vars": {name: inventory.host_vars(h) for name, h in inventory.hosts.items()},
        "group_names": {name: inventory.group_names(h) for name, h in inventory.hosts.items()},
    }


def load_text(tmp_path: Path, name: str, text: str) -> Inventory:
    path = tmp_path / name
    path.write_text(text)
    return load_inventory(path)


def problems_of(tmp_path: Path, name: str, text: str) -> list[Problem]:
    with pytest.raises(InputError) as caught:
        load_text(tmp_path, name, text)
    return caught.value.problems


# ---------------------------------------------------------------- the lab, in both formats


def test_ini_and_yaml_versions_of_the_lab_are_the_same_inventory() -> None:
    ini, yml = view(load_inventory(LAB_INI)), view(load_inventory(LAB_YML))
    assert ini == yml
    assert ini["hosts"] == ["spark-head", *SPARKS]
    assert ini["groups"]["spark"] == SPARKS
    assert ini["groups"]["lab"] == ["spark-head", *SPARKS]
    assert ini["group_names"]["spark05"] == ["lab", "rack_b", "spark"]
    assert ini["vars"]["spark08"] == {
        "ansible_user": "spark",
        "ansible_ssh_private_key_file": "~/.ssh/spark_lab",
        "models": ["llama3.1:8b", "qwen3:32b"],
        "hf_home": "/data/huggingface",
        "ansible_port": 2222,
        "rack": "b",
        "ansible_host": "10.20.2.8",
    }


@pytest.mark.parametrize(
    ("name", "text"),
    [
        pytest.param(
            "hosts.ini",
            "top x='5' y=True z=[1,2] w=yes\n[gpu]\nspark[01:02]:2222 user=ubuntu\n"
            "[gpu:vars]\nv='5'\nn = 7 # a comment\ns=two words\n",
            id="ini",
        ),
        pytest.param(
            "hosts.yml",
            "all:\n  hosts:\n    top: {x: 5, y: true, z: [1, 2], w: 'yes'}\n  children:\n    gpu:\n"
            "      hosts:\n        spark[01:02]:2222: {user: ubuntu}\n"
            "      vars: {v: '5', n: 7, s: two words}\n",
            id="yaml",
        ),
    ],
)
def test_values_are_typed_as_ansible_types_them(tmp_path: Path, name: str, text: str) -> None:
    inventory = load_text(tmp_path, name, text)
    assert inventory.host_vars(inventory.hosts["top"]) == {"x": 5, "y": True, "z": [1, 2], "w": "yes"}
    spark = inventory.host_vars(inventory.hosts["spark02"])
    assert spark == {"v": "5", "n": 7, "s": "two words", "ansible_port": 2222, "user": "ubuntu"}
    assert inventory.group_names(inventory.hosts["top"]) == ["ungrouped"]


# ---------------------------------------------------------------- ranges and ports


@pytest.mark.parametrize(
    ("entry", "names", "port"),
    [
        ("spark[01:03]", ["spark01", "spark02", "spark03"], None),
        ("spark[1:3]", ["spark1", "spark2", "spark3"], None),
        ("spark[:2]", ["spark0", "spark1", "spark2"], None),
        ("node-[a:c]", ["node-a", "node-b", "node-c"], None),
        ("rack-[y:B]", ["rack-y", "rack-z", "rack-A", "rack-B"], None),  # Ansible's a..zA..Z order
        ("h[1:10:3]", ["h1", "h4", "h7", "h10"], None),
        ("r[a:b]n[1:2]", ["ran1", "ran2", "rbn1", "rbn2"], None),
        ("spark[01:02].lab", ["spark01.lab", "spark02.lab"], None),
        ("10.0.0.[1:3]", ["10.0.0.1", "10.0.0.2", "10.0.0.3"], None),
        ("spark01:2222", ["spark01"], 2222),
        ("spark[01:02]:2222", ["spark01", "spark02"], 2222),
        ("[fe80::1]:2222", ["fe80::1"], 2222),
        ("fe80::1", ["fe80::1"], None),
        ("my_host!", ["my_host!"], None),
    ],
)
def test_host_entries_expand_to_names_and_a_port(entry: str, names: list[str], port: int | None) -> None:
    assert expand_host(entry) == (names, port)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("spark[05:01]", "host range [05:01] in 'spark[05:01]' is empty: it begins after it ends"),
        ("spark[c:a]", "is empty: it begins after it ends"),
        ("spark[01:100]", "zero-padded host range [01:100] in 'spark[01:100]' needs begin and end"),
        ("spark[1:5:0]", "the step of host range [1:5:0] in 'spark[1:5:0]' must be a positive number"),
        ("spark[1:]", "host range [1:] in 'spark[1:]' has no end"),
        ("spark[1]", "must be [begin:end] or [begin:end:step]"),
        ("spark[1:x]", "needs two numbers or two single letters"),
        ("spark[1:3", "'[' without ']' in host name 'spark[1:3'"),
        ("spark[0:999999]", "stands for more than 100000 hosts"),
    ],
)
def test_bad_ranges_are_refused(entry: str, message: str) -> None:
    with pytest.raises(InventoryProblem) as caught:
        expand_host(entry)
    assert message in str(caught.value)


# ---------------------------------------------------------------- groups and children


def test_children_may_be_declared_after_use_and_nest() -> None:
    inventory = load_inventory(LAB_INI)
    assert inventory.groups["all"].children == ["ungrouped", "lab"]
    assert inventory.groups["lab"].children == ["head", "spark"]
    assert inventory.members("rack_b") == ["spark05", "spark06", "spark07", "spark08"]
    assert inventory.hosts["spark01"].groups == ["all", "lab", "spark", "rack_a"]  # by depth
    assert inventory.members("nosuch") == []


@pytest.mark.parametrize(
    ("text", "ungrouped", "groups_of_h1"),
    [
        pytest.param("h1\nh2\n[g]\nh1\n", ["h2"], ["g"], id="ini-listed-later-leaves-ungrouped"),
        pytest.param("[all]\nh1\n[g]\nh2\n", ["h1"], ["ungrouped"], id="ini-all-section"),
        pytest.param("all:\n  hosts: {h1: , h2: }\n  children: {g: {hosts: h1}}\n", ["h2"], ["g"], id="yaml"),
    ],
)
def test_ungrouped_holds_hosts_without_a_group(
    tmp_path: Path, text: str, ungrouped: list[str], groups_of_h1: list[str]
) -> None:
    inventory = load_text(tmp_path, "inv", text)
    assert inventory.members("ungrouped") == ungrouped
    assert inventory.group_names(inventory.hosts["h1"]) == groups_of_h1


# ---------------------------------------------------------------- variable precedence

PRECEDENCE = [
    # host, variable, winner: why
    ("spark01", "all_inline_vs_all_dir", "group_vars/all.yml"),  # folders beat the inventory file
    ("spark01", "group_inline_vs_all_dir", "group_vars/all.yml"),  # even a child group's inline vars
    ("spark03", "level", "rack_b"),  # child group beats parent beats 'all'
    ("spark-head", "level", "all"),
    ("spark03", "child_vs_parent", "spark"),
    ("spark01", "child_vs_parent", "rack_a"),
    ("spark01", "dir_child_vs_parent", "group_vars/rack_a/10-net.yml"),  # depth, in folders too
    ("spark03", "dir_child_vs_parent", "group_vars/spark.yml"),
    ("spark02", "sibling", "rack_a"),  # same depth: ansible_group_priority=10 beats 1
    ("spark02", "by_name", "zeta"),  # same depth and priority: the later name wins
    ("spark02", "level", "rack_a"),
    ("spark01", "files_in_order", "20-gpu.yaml"),  # group_vars/rack_a/*: sorted, later wins
    ("spark01", "net_extra", "nested"),  # subfolders are read
    ("spark-head", "head_file_without_extension", True),
    ("spark01", "host_inline_vs_group_dir", "host inline"),  # host vars beat every group's
    ("spark02", "host_inline_vs_group_dir", "group_vars/rack_a"),
    ("spark01", "host_inline_vs_host_dir", "host_vars/spark01.yml"),
    ("spark02", "from_json", 2),  # host_vars/spark02.json
    ("spark01", "all_dir_vs_play_all_dir", "play/group_vars/all.yml"),  # the playbook's folder wins
    ("spark01", "play_all_dir_vs_group_dir", "group_vars/rack_a"),  # ... but 'all' < other groups
    ("spark03", "play_all_dir_vs_group_dir", "play/group_vars/all.yml"),
    ("spark01", "host_dir_vs_play_host_dir", "play/host_vars/spark01.yml"),
]


@pytest.fixture(scope="module")
def vars_dirs() -> Inventory:
    inventory = load_inventory(VARS_DIRS / "hosts")
    load_vars_dirs(inventory, VARS_DIRS / "play")
    return inventory


@pytest.mark.parametrize(("host", "name", "expected"), PRECEDENCE)
def test_variable_precedence(vars_dirs: Inventory, host: str, name: str, expected: object) -> None:
    assert vars_dirs.host_vars(vars_dirs.hosts[host])[name] == expected


@pytest.mark.parametrize(("host", "name", "expected"), PRECEDENCE)
def test_each_variable_knows_where_its_winning_value_is_written(
    vars_dirs: Inventory, host: str, name: str, expected: object
) -> None:
    place = vars_dirs.host_var_places(vars_dirs.hosts[host])[name]
    assert place.line is not None, place
    line = Path(place.file).read_text().splitlines()[place.line - 1]
    assert name in line and str(expected).lower() in line.lower(), f"{place}: {line}"


def test_yaml_inventory_variables_know_their_lines(tmp_path: Path) -> None:
    text = "all:\n  vars:\n    region: eu\n  hosts:\n    spark01:\n      rack: a\n      region: lab\n"
    inventory = load_text(tmp_path, "hosts.yml", text)
    places = inventory.host_var_places(inventory.hosts["spark01"])
    file = str(tmp_path / "hosts.yml")
    assert (places["rack"].file, places["rack"].line, places["region"].line) == (file, 6, 7)


def test_vars_dirs_skip_what_ansible_skips(vars_dirs: Inventory) -> None:
    every = {k for h in vars_dirs.hosts.values() for k in vars_dirs.host_vars(h)}
    assert "ignored" not in every  # .hidden.yml, old.yml~, notes.txt
    assert "never_seen" not in every  # group_vars of a group the inventory lacks
    assert "ansible_group_priority" not in every  # a group's setting, not a variable


def test_a_vars_folder_is_read_once(tmp_path: Path) -> None:
    inventory = load_text(tmp_path, "hosts.ini", "spark01\n")
    load_vars_dirs(inventory, tmp_path)
    load_vars_dirs(inventory, tmp_path / "." / "")
    assert [d.base for d in inventory.vars_dirs] == [tmp_path.resolve()]


# ---------------------------------------------------------------- connection variables


def test_connection_vars_come_from_groups_too_with_or_without_prefix(tmp_path: Path) -> None:
    text = "[gpu]\nspark01 host=10.0.0.5\nlocalhost\n[gpu:vars]\nansible_user=spark\nconnection=local\n"
    inventory = load_text(tmp_path, "hosts.ini", text)
    spark = inventory.hosts["spark01"]
    assert (spark.var("host"), spark.var("user"), spark.var("port", 22)) == ("10.0.0.5", "spark", 22)
    assert spark.connection == "local"
    assert Host("spark02").connection == "ssh"
    assert Host("localhost").connection == "local"


def test_implicit_localhost() -> None:
    inventory = implicit_localhost()
    assert inventory.match("all") == ["localhost"]
    assert inventory.hosts["localhost"].connection == "local"
    assert inventory.group_names(inventory.hosts["localhost"]) == ["ungrouped"]


# ---------------------------------------------------------------- host patterns

PATTERNS = [
    ("all", ["spark-head", *SPARKS]),
    ("*", ["spark-head", *SPARKS]),
    ("spark-head", ["spark-head"]),
    ("rack_a", SPARKS[:4]),
    ("spark0*", SPARKS),
    ("r*", SPARKS),  # globs match group names too
    ("~spark0[1-3]", SPARKS[:3]),
    ("~0[78]", []),  # a regex must match from the start of the name
    ("~.*0[78]$", ["spark07", "spark08"]),
    ("~h.a", ["spark-head"]),  # regexes match group names too
    ("rack_a:rack_b", SPARKS),
    ("rack_a,spark-head", ["spark-head", *SPARKS[:4]]),  # inventory order, not pattern order
    ("rack_a, spark-head", ["spark-head", *SPARKS[:4]]),
    ("lab:&rack_b", SPARKS[4:]),
    ("spark:!rack_a", SPARKS[4:]),
    ("!rack_a", ["spark-head", *SPARKS[4:]]),  # only exclusions: start from all
    ("&rack_a", SPARKS[:4]),
    ("spark*:&rack_a:!spark02", ["spark01", "spark03", "spark04"]),
    ("!spark02:rack_a", ["spark01", "spark03", "spark04"]),  # order of terms does not matter
    ("rack_b[0]", ["spark05"]),
    ("rack_b[1:2]", ["spark06", "spark07"]),
    ("rack_b[2:]", ["spark07", "spark08"]),
    ("rack_b[-1]", ["spark08"]),
    ("rack_b[9]", []),
    ("spark:!rack_b[0]", [*SPARKS[:4], *SPARKS[5:]]),
    ("nosuch", []),
    ("nosuch:spark01", ["spark01"]),
    ("ungrouped", []),
    ("10.20.0.10", []),  # ansible_host is not a name
    ("~(unclosed", []),
]


@pytest.fixture(scope="module")
def lab() -> Inventory:
    return load_inventory(LAB_INI)


@pytest.mark.parametrize(("pattern", "expected"), PATTERNS)
def test_host_patterns(lab: Inventory, pattern: str, expected: list[str]) -> None:
    assert lab.match(pattern) == expected


# ---------------------------------------------------------------- inputs copied from Ansible's docs


def test_ansible_docs_ini_example_reads_unchanged() -> None:
    inventory = load_inventory(DATA / "docs_ini_plugin.ini")
    assert inventory.members("web") == ["host1", "host2", "tomcat1", "tomcat2", "tomcat3", "jenkins1"]
    vars_of = {name: inventory.host_vars(h) for name, h in inventory.hosts.items()}
    assert vars_of["host2"] == {"has_java": False, "http_port": 8080, "myvar": 23, "ansible_port": 222}
    assert vars_of["tomcat2"]["myvar"] == 34
    assert vars_of["tomcat3"]["mysecret"] == "03#pa33w0rd"
    assert vars_of["jenkins1"]["has_java"] is True


def test_ansible_docs_intro_example_reads_unchanged() -> None:
    inventory = load_inventory(DATA / "docs_intro.ini")
    assert inventory.members("ungrouped") == ["mail.example.com"]
    assert inventory.match("webservers")[2:4] == ["www01.example.com", "www03.example.com"]
    assert len(inventory.members("webservers")) == 27
    assert inventory.match("db-*") == [f"db-{c}.example.com" for c in "abcdef"]
    assert inventory.hosts["jumper"].var("host") == "192.0.2.50"
    assert inventory.hosts["localhost"].connection == "local"
    assert inventory.host_vars(inventory.hosts["host2"])["http_port"] == 303
    assert inventory.match("prod:&raleigh") == ["host2", "host3"]


def test_a_folder_is_every_inventory_file_in_it() -> None:
    inventory = load_inventory(DATA / "dir_inventory")
    assert list(inventory.hosts) == ["spark01", "spark02", "spark03"]  # not old.retry's spark99
    assert inventory.match("gpu") == ["spark01"]  # from sub/03-more
    assert inventory.host_vars(inventory.hosts["spark03"]) == {
        "from_ini": True,
        "from_yaml": 1,
        "spark_group_file": "group_vars/spark.yml",
    }


@pytest.mark.parametrize(
    ("text", "expected_groups"),
    [
        pytest.param("all:\n  children:\n    gpu:\n      hosts: {spark01: }\n", ["gpu"], id="yaml-mapping"),
        pytest.param("[gpu]\nspark01\n", ["gpu"], id="ini-section"),
        pytest.param("spark01\n", ["ungrouped"], id="ini-host-only"),
        pytest.param("spark01 ansible_host=10.0.0.5\n", ["ungrouped"], id="ini-host-vars"),
    ],
)
def test_a_file_without_extension_is_yaml_or_ini_by_content(
    tmp_path: Path, text: str, expected_groups: list[str]
) -> None:
    inventory = load_text(tmp_path, "hosts", text)
    assert inventory.group_names(inventory.hosts["spark01"]) == expected_groups


# ---------------------------------------------------------------- errors name file and line

ERRORS = [
    # file name, text, line, message
    ("inv.ini", "[gpu group]\nspark01\n", 1, "invalid section header [gpu group]"),
    ("inv.ini", "[gpu:kids]\nspark01\n", 1, "section [gpu:kids] has unknown type 'kids'"),
    ("inv.ini", "# lab\n[gpu]\nspark[05:01]\n", 3, "host range [05:01] in 'spark[05:01]' is empty"),
    ("inv.ini", "[gpu]\nspark01 ansible_user\n", 2, "expected key=value host variable, got 'ansible_user'"),
    ("inv.ini", "[gpu]\nspark01 x='open\n", 2, "cannot read host line: No closing quotation"),
    ("inv.ini", "[gpu]\nspark01:\n", 2, "host 'spark01:' ends with ':' but gives no port"),
    ("inv.ini", "[gpu]\ns1\n\n[gpu:vars]\nnovalue\n", 5, "expected key=value in [gpu:vars], got 'novalue'"),
    (
        "inv.ini",
        "[lab:children]\nhead\ngpu\n[head]\n",
        3,
        "section [lab:children] includes undefined group 'gpu'",
    ),
    ("inv.ini", "[x:vars]\na=1\n", 1, "section [x:vars] is for group 'x', which is never declared"),
    ("inv.ini", "[lab:children]\nbad name\n", 2, "expected a group name in [lab:children], got 'bad name'"),
    (
        "inv.ini",
        "[a:children]\nb\n[b:children]\na\n",
        4,
        "making 'a' a child of 'b' creates a loop of groups",
    ),
    (
        "inv.ini",
        "[g]\n[g:vars]\nansible_group_priority=high\n",
        3,
        "ansible_group_priority of group 'g' must be",
    ),
    ("inv.ini", "---\n", 1, "'---' is not a host name"),
    ("inv.yml", "all:\n  hosts:\n    spark[3:1]:\n", 3, "host range [3:1] in 'spark[3:1]' is empty"),
    ("inv.yml", "all:\n  hosts: [a, b]\n", 2, "'hosts' of group 'all' must be a mapping, got a list"),
    (
        "inv.yml",
        "all:\n  children:\n    gpu:\n      hosts:\n        5: {}\n",
        5,
        "host name 5 must be a string",
    ),
    ("inv.yml", "all:\n  hosts:\n    s1: [1]\n", 3, "vars of host 's1' must be a mapping"),
    (
        "inv.yml",
        "all:\n  children:\n    all: {}\n",
        3,
        "'all' holds every group; it cannot be a child of 'all'",
    ),
    ("inv.yml", "all:\n  hots: {}\n", 2, "unknown key 'hots' in group 'all'"),
    ("inv.yml", "plugin: aws_ec2\n", 1, "this is an inventory plugin configuration"),
    ("inv.yml", "- spark1\n", 1, "an inventory must be a mapping with an 'all' group"),
    ("inv", "all:\n  hosts:\n    - [\n", 4, "YAML syntax error"),  # looks like YAML: YAML's error
    ("inv", "[gpu]\nspark01 user\n", 2, "expected key=value host variable"),  # else INI's
]


@pytest.mark.parametrize(("name", "text", "line", "message"), ERRORS)
def test_errors_name_file_and_line(tmp_path: Path, name: str, text: str, line: int, message: str) -> None:
    (problem,) = problems_of(tmp_path, name, text)
    assert (problem.place.file, problem.place.line) == (str(tmp_path / name), line)
    assert message in problem.message


def test_every_ini_problem_is_reported_at_once(tmp_path: Path) -> None:
    found = problems_of(tmp_path, "inv.ini", "[gpu]\nspark[2:1]\nok\nspark01 novalue\n[x:vars]\na=1\n")
    assert [p.place.line for p in found] == [2, 4, 5]


def test_errors_in_group_vars_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "group_vars" / "gpu.yml").write_text("# gpu\n- not a mapping\n")
    (problem,) = problems_of(tmp_path, "inv.ini", "[gpu]\nspark01\n")
    assert (problem.place.file, problem.place.line) == (str(tmp_path / "group_vars" / "gpu.yml"), 2)
    assert "variables must be a mapping" in problem.message


def test_errors_in_a_folder_name_the_file_inside(tmp_path: Path) -> None:
    (tmp_path / "a.ini").write_text("[gpu]\nspark01\n")
    (tmp_path / "b.ini").write_text("[cpu]\n\nspark02 x\n")
    with pytest.raises(InputError) as caught:
        load_inventory(tmp_path)
    assert [str(p.place) for p in caught.value.problems] == [f"{tmp_path / 'b.ini'}:3"]


# ---------------------------------------------------------------- the same inventories, read by Ansible

ANSIBLE_VIEW = """
import json, sys
from ansible import constants as C
from ansible.inventory.manager import InventoryManager
from ansible.parsing.dataloader import DataLoader
from ansible.vars.manager import VariableManager

source, basedir, patterns = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
loader = DataLoader()
loader.set_basedir(basedir)
inventory = InventoryManager(loader=loader, sources=[source])
variables = VariableManager(loader=loader, inventory=inventory)
hosts = inventory.get_hosts("all")

def host_vars(host):
    found = variables.get_vars(host=host, include_hostvars=False, stage="all")
    return {k: v for k, v in found.items() if k not in C.INTERNAL_STATIC_VARS}

def match(pattern):
    try:
        return sorted(h.name for h in inventory.get_hosts(pattern))
    except Exception:
        return None

print(json.dumps({
    "hosts": sorted(h.name for h in hosts),
    "groups": {name: sorted(h.name for h in g.get_hosts()) for name, g in inventory.groups.items()},
    "vars": {h.name: host_vars(h) for h in hosts},
    "group_names": {h.name: sorted(g.name for g in h.get_groups() if g.name != "all") for h in hosts},
    "patterns": {p: match(p) for p in patterns},
}))
"""

SAMPLES = [
    pytest.param(LAB_INI, None, id="lab.ini"),
    pytest.param(LAB_YML, None, id="lab.yml"),
    pytest.param(DATA / "docs_ini_plugin.ini", None, id="docs_ini_plugin"),
    pytest.param(DATA / "docs_ungrouped.ini", None, id="docs_ungrouped"),
    pytest.param(DATA / "docs_intro.ini", None, id="docs_intro"),
    pytest.param(DATA / "dir_inventory", None, id="dir_inventory"),
    pytest.param(VARS_DIRS / "hosts", VARS_DIRS / "play", id="vars_dirs"),
]


@pytest.mark.skipif(not ANSIBLE_PYTHON.exists(), reason="ansible-core is not installed in .venv-ansible")
@pytest.mark.parametrize(("source", "playbook_dir"), SAMPLES)
def test_ansible_reads_the_samples_the_same_way(
    source: Path, playbook_dir: Path | None, tmp_path: Path
) -> None:
    patterns = [p for p, _ in PATTERNS]
    basedir = playbook_dir or tmp_path
    ours = load_inventory(source)
    if playbook_dir:
        load_vars_dirs(ours, playbook_dir)
    theirs = json.loads(
        subprocess.run(
            [str(ANSIBLE_PYTHON), "-c", ANSIBLE_VIEW, str(source), str(basedir), json.dumps(patterns)],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
            env={"ANSIBLE_HOME": str(tmp_path / "ansible"), "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp")},
        ).stdout
    )
    mine = view(ours)
    assert sorted(mine["hosts"]) == theirs["hosts"]
    assert {g: sorted(hosts) for g, hosts in mine["groups"].items()} == theirs["groups"]
    assert mine["vars"] == theirs["vars"]
    assert mine["group_names"] == theirs["group_names"]
    for pattern, expected in theirs["patterns"].items():
        if expected is not None:  # Ansible refuses an out-of-range subscript; sparkprov matches nothing
            assert sorted(ours.match(pattern)) == expected, pattern
