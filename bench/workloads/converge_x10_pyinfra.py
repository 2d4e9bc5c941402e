"""pyinfra equivalent of converge_x10.yml: converge_pyinfra.py ten times, set NN under <anchors_base>/sNN
(100 dirs, 100 templates, 50 files, 10 guarded shells). Lives next to converge_pyinfra.py when run.

Run:  pyinfra -y @local converge_x10_pyinfra.py --data anchors_base=/tmp/anchors/target
"""

from pyinfra import host, local

SETS = 10
base_dir = host.data.get("anchors_base") or "/tmp/anchors/target"

# Assigning host.data sets this host's top-priority data (above --data and the inventory), which is
# what the included deploy reads; include(data=...) would only give defaults.
for number in range(1, SETS + 1):
    host.data.anchors_base = f"{base_dir}/s{number:02d}"
    local.include("converge_pyinfra.py")
host.data.anchors_base = base_dir
