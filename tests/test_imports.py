"""The package's shape: importing does nothing, the core knows no Kafka, no module imports another in a cycle."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from streams.settings import ROOT

PACKAGE = ROOT / "streams"
KAFKA_LIBRARIES = ("faust", "aiokafka", "kafka", "mode")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> list[str]:
    return sorted(module_name(path) for path in PACKAGE.rglob("*.py"))


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def streams_graph() -> dict[str, set[str]]:
    modules = set(all_modules())
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        name = module_name(path)
        graph[name] = {target for target in imports_of(path) if target in modules and target != name}
    return graph


def test_no_module_of_the_core_imports_faust_or_kafka():
    offenders = {}
    for path in (PACKAGE / "core").rglob("*.py"):
        bad = sorted(m for m in imports_of(path) if m.split(".")[0] in KAFKA_LIBRARIES)
        if bad:
            offenders[module_name(path)] = bad
    assert offenders == {}


def test_there_is_no_import_cycle_among_the_modules():
    graph = streams_graph()
    cycles, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                cycles.append(path[path.index(target):] + [target] if target in path else [node, target])
            elif target not in state:
                visit(target, path + [target])
        state[node] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_the_cycle_check_finds_a_cycle(monkeypatch):
    """The check above can fail: a made-up graph with a cycle is reported."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}}
    monkeypatch.setattr(sys.modules[__name__], "streams_graph", lambda: graph)
    try:
        test_there_is_no_import_cycle_among_the_modules()
    except AssertionError:
        return
    raise AssertionError("a cycle a -> b -> c -> a was not found")


PROBE = """
import importlib, json, os, sys, threading

def parent_of(pid):
    try:
        return int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None

modules = json.loads(sys.argv[1])
environ = dict(os.environ)
threads = {t.ident for t in threading.enumerate()}
children = set(os.listdir(f"/proc/{os.getpid()}/task"))
for name in modules:
    importlib.import_module(name)
import streams.worker  # the module-level app is made only when asked for
print(json.dumps({
    "environ_changed": sorted(k for k in set(environ) | set(os.environ) if environ.get(k) != os.environ.get(k)),
    "new_threads": [t.name for t in threading.enumerate() if t.ident not in threads],
    "new_tasks": sorted(set(os.listdir(f"/proc/{os.getpid()}/task")) - children),
    "app_made": "app" in vars(streams.worker),
    "children": [pid for pid in os.listdir("/proc") if pid.isdigit() and parent_of(pid) == os.getpid()],
}))
"""


def test_importing_every_module_starts_nothing_and_leaves_the_environment_alone(tmp_path):
    modules = all_modules()
    assert "streams.worker" in modules and "streams.agents.decide" in modules and "streams.cli" in modules
    # A fresh interpreter, and a working directory with no config: importing must not read rules or templates.
    result = subprocess.run([sys.executable, "-c", PROBE, json.dumps(modules)], capture_output=True, text=True,
                            cwd=tmp_path, timeout=120, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"environ_changed": [], "new_threads": [], "new_tasks": [], "app_made": False,
                      "children": []}


def test_build_app_makes_the_agents_from_the_settings_it_is_given(tmp_path):
    """Settings are passed, not read from the environment: the app id and topic names come from them."""
    probe = """
import json, os, sys
from dataclasses import replace
from streams.settings import Settings, Topics
from streams.worker import build_app
settings = replace(Settings(), app_id="probe-app", bootstrap_servers="127.0.0.1:1",
                   topics=replace(Topics(), notifications="probe-notifications"))
app = build_app(settings)
print(json.dumps({"id": app.conf.id, "agents": sorted(app.agents),
                  "dispatch_reads": sorted(app.agents["dispatch"].channel.topics),
                  "environ": "KAFKA_BOOTSTRAP_SERVERS" in os.environ}))
"""
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, timeout=120,
                            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"id": "probe-app", "agents": ["decide", "dispatch", "ingest", "redispatch"],
                      "dispatch_reads": ["probe-notifications"], "environ": False}
