"""The deployment files (Dockerfile, deploy/) agree with the code and with their formats.

None of them is run here (no container runtime, no cluster), so this checks what can be checked
offline: the Kubernetes manifests against the Kubernetes schemas (kubernetes-validate, strict),
every command against ysync's own argument parsers, every environment variable against
ysync.config's settings and the whole environment of each container against load_config, probes
against the ports the configuration opens, grace periods against the drain and shutdown times,
the compose file's files, services and its edit of deploy/nginx.conf, and the HAProxy and Caddy
examples with their own checkers where those are installed (skipped with the reason otherwise).
"""

from __future__ import annotations

import ast
import base64
import fnmatch
import importlib
import json
import re
import shlex
import shutil
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version

from ysync.config import Config, env_names, load_config, settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
CONSOLE_SCRIPTS: dict[str, str] = PYPROJECT["project"]["scripts"]
#: Variables the image sets for Python itself, not for ysync.
PYTHON_RUNTIME_ENV = {"PATH", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE"}
#: Oldest Kubernetes the manifests are for, and the newest the schemas know.
KUBERNETES_VERSIONS = ("1.29.0", latest_version())
DEFAULTS = Config()
#: An open WebSocket carries a ping and its pong at least this often: idle timeouts must exceed it.
PING_ROUND = DEFAULTS.server.ping_interval + DEFAULTS.server.ping_timeout


def _known_env_names() -> set[str]:
    names = {"YSYNC_CONFIG"}  # read by load_config: the config file
    for section, key, f, _kind in settings():
        names.update(env_names(section, key, f))
    return names


KNOWN_ENV = _known_env_names()


def _config(environ: Mapping[str, str], tmp_path: Path) -> Config:
    """The configuration a container with ``environ`` gets (no config.toml in the image)."""
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    return load_config(empty, environ=dict(environ))


def _parse_command(argv: list[str]) -> None:
    """Parses ``argv`` with the parser of the console script it names (fails on a bad flag)."""
    assert argv and argv[0] in CONSOLE_SCRIPTS, f"{argv}: not a console script of pyproject.toml"
    module = importlib.import_module(CONSOLE_SCRIPTS[argv[0]].partition(":")[0])
    factory = getattr(module, "build_parser", None) or module._build_parser
    try:
        factory().parse_args(argv[1:])
    except SystemExit as exc:
        pytest.fail(f"{shlex.join(argv)}: the {argv[0]} parser refuses it (exit {exc.code})")


def _seconds(value: str | int | float, unit: str = "s") -> float:
    """A duration as compose, HAProxy or Kubernetes annotations write it (``90s``, ``1m30s``)."""
    if isinstance(value, (int, float)):
        return float(value)
    scale = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
    parts = re.findall(r"(\d+(?:\.\d+)?)(us|ms|s|m|h|d)?", value.strip())
    assert parts and "".join(n + u for n, u in parts) == value.strip(), f"duration {value!r}"
    return sum(float(number) * scale[suffix or unit] for number, suffix in parts)


def _stop_time(config: Config) -> float:
    """The longest a server takes to stop after SIGTERM (ysync.server: drain, then close).

    The 1012 closes are spread over server.drain_period, the last closing handshakes get
    server.close_timeout (+ 1 s), pending appends are flushed (up to redis.timeout), and the
    listener waits up to server.shutdown_timeout for connections.
    """
    server = config.server
    return (server.drain_period + server.close_timeout + 1 + config.redis.timeout
            + server.shutdown_timeout)


def _serves(argv: list[str]) -> bool:
    return argv[:2] == ["ysync", "serve"]


# --- Kubernetes ------------------------------------------------------------------------------

def _k8s_documents() -> list[tuple[Path, dict[str, Any]]]:
    documents = []
    for path in sorted(K8S.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document is not None:
                documents.append((path, document))
    return documents


def _by_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _path, doc in _k8s_documents() if doc["kind"] == kind]


def _pod_specs() -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(workload, pod template) of every Deployment and CronJob."""
    for doc in _by_kind("Deployment"):
        yield doc, doc["spec"]["template"]
    for doc in _by_kind("CronJob"):
        yield doc, doc["spec"]["jobTemplate"]["spec"]["template"]


def _data(doc: dict[str, Any]) -> dict[str, str]:
    values = {key: base64.b64decode(value).decode() for key, value in
              (doc.get("data") or {}).items()} if doc["kind"] == "Secret" else \
        dict(doc.get("data") or {})
    values.update(doc.get("stringData") or {})
    return values


def _container_env(container: dict[str, Any]) -> dict[str, str]:
    """The environment of ``container``, its envFrom and valueFrom resolved in the manifests."""
    sources = {(doc["kind"], doc["metadata"]["name"]): _data(doc)
               for doc in _by_kind("ConfigMap") + _by_kind("Secret")}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        kind, ref = ("ConfigMap", source["configMapRef"]) if "configMapRef" in source else \
            ("Secret", source["secretRef"])
        assert (kind, ref["name"]) in sources, f"{kind} {ref['name']} is not in deploy/k8s"
        env.update(sources[kind, ref["name"]])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
            continue
        ref_kind, ref = next(iter(item["valueFrom"].items()))
        kind = {"configMapKeyRef": "ConfigMap", "secretKeyRef": "Secret"}[ref_kind]
        env[item["name"]] = sources[kind, ref["name"]][ref["key"]]
    return env


def _containers() -> Iterator[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]:
    """(workload, pod spec, container) of every ysync container."""
    for workload, template in _pod_specs():
        for container in template["spec"]["containers"]:
            yield workload, template["spec"], container


def _argv(container: dict[str, Any]) -> list[str]:
    command = container.get("command") or _dockerfile_cmd()
    return [*command, *container.get("args", [])]


def test_the_manifests_are_there() -> None:
    kinds = sorted(doc["kind"] for _path, doc in _k8s_documents())
    assert kinds == sorted(["ConfigMap", "Secret", "Deployment", "Deployment", "Service",
                            "PodDisruptionBudget", "CronJob", "Ingress"])


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_the_manifests_match_the_kubernetes_schemas(version: str) -> None:
    failures = []
    for path, doc in _k8s_documents():
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            failures.append(f"{path.name}: {doc['kind']} {doc['metadata']['name']}: "
                            f"{'.'.join(map(str, exc.path))}: {exc.message}")
    assert failures == []


def test_every_container_runs_a_ysync_command_its_parser_accepts() -> None:
    commands = []
    for _workload, _spec, container in _containers():
        argv = _argv(container)
        _parse_command(argv)
        commands.append(argv)
    assert ["ysync", "serve"] in commands
    assert ["ysync-worker"] in commands
    assert ["ysync-worker", "--once"] in commands


def test_the_cronjob_runs_once_and_the_worker_deployment_runs_on() -> None:
    # a continuous worker in a CronJob would never end; a --once worker in a Deployment would
    # be restarted by Kubernetes in a crash loop after every pass
    (cronjob,) = _by_kind("CronJob")
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    for workload, _spec, container in _containers():
        if _argv(container)[0] == "ysync-worker":
            assert ("--once" in _argv(container)) == (workload["kind"] == "CronJob")


def test_every_environment_variable_is_a_setting(tmp_path: Path) -> None:
    for workload, _spec, container in _containers():
        env = _container_env(container)
        unknown = sorted(set(env) - KNOWN_ENV)
        assert unknown == [], f"{workload['metadata']['name']}: not ysync settings: {unknown}"
        config = _config(env, tmp_path)  # refuses bad values and inconsistent settings
        assert config.redis.url, "every pod would run its own embedded Redis"
        assert config.storage_kind in ("postgres", "gcs", "filesystem")


def test_probes_ask_the_ports_and_paths_the_processes_serve(tmp_path: Path) -> None:
    served = _served_paths()
    probed = 0
    for workload, _spec, container in _containers():
        config = _config(_container_env(container), tmp_path)
        ports = {port.get("name"): port["containerPort"] for port in container.get("ports", [])}
        listening = config.server.port if _serves(_argv(container)) else \
            config.worker.metrics_port
        assert set(ports.values()) <= {listening}, f"{workload['metadata']['name']}: {ports}"
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            if probe not in container:
                continue
            get = container[probe]["httpGet"]
            port = ports[get["port"]] if isinstance(get["port"], str) else get["port"]
            assert port == listening != 0, f"{workload['metadata']['name']} {probe}: {get}"
            assert get["path"] in served, f"{get['path']}: no such route in ysync/ or workers/"
            probed += 1
    assert probed >= 3  # the server's readiness and liveness, the worker's liveness


def _served_paths() -> set[str]:
    """String constants that look like HTTP routes in the code of ysync and its worker."""
    paths = set()
    for package in ("ysync", "workers"):
        for source in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(source.read_text())):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and \
                        re.fullmatch(r"/[a-z]+", node.value):
                    paths.add(node.value)
    return paths


def test_the_server_probes_readiness_and_liveness_apart() -> None:
    for _workload, _spec, container in _containers():
        if _serves(_argv(container)):
            assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
            assert container["livenessProbe"]["httpGet"]["path"] == "/livez"


def test_grace_periods_cover_the_drain_and_the_shutdown(tmp_path: Path) -> None:
    for workload, spec, container in _containers():
        config = _config(_container_env(container), tmp_path)
        grace = spec["terminationGracePeriodSeconds"]
        if _serves(_argv(container)):
            needed = _stop_time(config)
        else:  # a task in hand finishes: its storage calls take up to storage.timeout
            needed = config.storage.timeout
        assert grace > needed, f"{workload['metadata']['name']}: {grace} s <= {needed} s"


def test_pods_run_as_the_image_user_without_privileges() -> None:
    uid = int(_dockerfile("USER")[-1].partition(":")[0])
    for workload, spec, container in _containers():
        name = workload["metadata"]["name"]
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] == uid, name
        assert container["securityContext"]["readOnlyRootFilesystem"] is True, name
        assert container["securityContext"]["allowPrivilegeEscalation"] is False, name
        assert "ALL" in container["securityContext"]["capabilities"]["drop"], name
        assert "memory" in container["resources"]["limits"], name


def test_service_budget_and_ingress_reach_the_servers() -> None:
    servers = [(w, c) for w, _s, c in _containers() if _serves(_argv(c))]
    (server, container), = servers
    assert server["spec"]["replicas"] >= 2
    labels = server["spec"]["template"]["metadata"]["labels"]
    assert server["spec"]["selector"]["matchLabels"].items() <= labels.items()
    port_names = {port["name"] for port in container["ports"]}
    (service,) = _by_kind("Service")
    assert service["spec"]["selector"].items() <= labels.items()
    assert "sessionAffinity" not in service["spec"]  # any server serves any room
    assert {port["targetPort"] for port in service["spec"]["ports"]} <= port_names
    (budget,) = _by_kind("PodDisruptionBudget")
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (ingress,) = _by_kind("Ingress")
    service_ports = {port["name"] for port in service["spec"]["ports"]}
    for rule in ingress["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            assert backend["name"] == service["metadata"]["name"]
            assert backend["port"]["name"] in service_ports
    annotations = ingress["metadata"]["annotations"]
    for timeout in ("proxy-read-timeout", "proxy-send-timeout"):
        seconds = _seconds(annotations[f"nginx.ingress.kubernetes.io/{timeout}"])
        assert seconds > PING_ROUND, f"{timeout} {seconds} s cuts idle WebSockets"


# --- the Dockerfile --------------------------------------------------------------------------

def _dockerfile_instructions() -> list[tuple[str, str]]:
    instructions, pending = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip().removesuffix("\\") + " "
        if not line.rstrip().endswith("\\"):
            word, _, rest = pending.strip().partition(" ")
            instructions.append((word.upper(), rest.strip()))
            pending = ""
    return instructions


def _dockerfile(instruction: str) -> list[str]:
    return [rest for word, rest in _dockerfile_instructions() if word == instruction]


def _dockerfile_cmd() -> list[str]:
    (cmd,) = _dockerfile("CMD")
    argv: list[str] = json.loads(cmd)
    return argv


def _dockerfile_env() -> dict[str, str]:
    env = {}
    for rest in _dockerfile("ENV"):
        for item in shlex.split(rest):
            name, _, value = item.partition("=")
            env[name] = value
    return env


def test_the_image_runs_ysync_serve_and_has_ysync_worker() -> None:
    assert _dockerfile_cmd() == ["ysync", "serve"]
    assert not _dockerfile("ENTRYPOINT")  # `docker run IMAGE ysync-worker` replaces the CMD
    for script in ("ysync", "ysync-worker"):
        module, _, function = CONSOLE_SCRIPTS[script].partition(":")
        assert callable(getattr(importlib.import_module(module), function))
    _parse_command(_dockerfile_cmd())


def test_the_image_listens_on_all_interfaces() -> None:
    assert _dockerfile_env()["YSYNC_SERVER_HOST"] == "0.0.0.0"
    assert _dockerfile("EXPOSE") == [str(DEFAULTS.server.port)]


class _Health(BaseHTTPRequestHandler):
    status = HTTPStatus.OK

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(self.status if self.path == "/healthz" else HTTPStatus.NOT_FOUND)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the test's output, not the server's


def test_the_image_healthcheck_asks_healthz_on_the_configured_port() -> None:
    (check,) = _dockerfile("HEALTHCHECK")
    argv = json.loads(check[check.index("CMD ") + 4:])
    assert argv[0] == "python"
    with ThreadingHTTPServer(("127.0.0.1", 0), _Health) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            def run(status: HTTPStatus, env: dict[str, str]) -> int:
                _Health.status = status
                return subprocess.run([sys.executable, *argv[1:]], env=env, timeout=30,
                                      capture_output=True).returncode
            port = str(server.server_address[1])
            assert run(HTTPStatus.OK, {"PORT": port}) == 0  # y-redis's name, as Cloud Run sets
            assert run(HTTPStatus.OK, {"YSYNC_SERVER_PORT": port, "PORT": "1"}) == 0
            assert run(HTTPStatus.SERVICE_UNAVAILABLE, {"PORT": port}) != 0
        finally:
            server.shutdown()


def test_the_image_sets_only_settings_and_no_secret() -> None:
    env = _dockerfile_env()
    assert set(env) - PYTHON_RUNTIME_ENV <= KNOWN_ENV, sorted(set(env) - PYTHON_RUNTIME_ENV)
    # a URL (with its password), a key or a token is given at run time, never built in
    secret_like = {name for section, key, f, _kind in settings()
                   if f.metadata["secret"] or f"{section}.{key}" in ("redis.url",)
                   or section == "auth" for name in env_names(section, key, f)}
    assert not set(env) & secret_like
    for rest in _dockerfile("ARG") + _dockerfile("ENV"):
        assert not re.search(r"PASSWORD|SECRET|TOKEN|_KEY\b", rest, re.IGNORECASE), rest


def test_the_image_is_built_in_a_stage_with_a_compiler_and_runs_as_a_user() -> None:
    stages = _dockerfile("FROM")
    assert len(stages) == 2 and stages[0].endswith(" AS build"), stages
    runs = " ".join(_dockerfile("RUN"))
    assert "gcc" in runs and "ysync.updates.COMPILED" in runs  # mypyc, and proof that it ran
    copies = _dockerfile("COPY")
    assert any(copy.startswith("--from=build ") for copy in copies)
    user = _dockerfile("USER")[-1].partition(":")[0]
    assert user.isdigit() and int(user) != 0  # numeric: runAsNonRoot can check it


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last pattern that matches decides."""
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        clean = pattern.removeprefix("!").strip("/")
        candidates = {clean, clean.removeprefix("**/")}
        parents = [path] + ["/".join(path.split("/")[:i]) for i in range(1, path.count("/") + 1)]
        if any(fnmatch.fnmatchcase(part, c) for part in parents for c in candidates):
            ignored = not negated
    return ignored


def _built_locally(path: Path) -> bool:
    """Left in the tree by a local build or run, not part of the sources."""
    return path.suffix in (".so", ".pyd", ".pyc") or "__pycache__" in path.parts or \
        "node_modules" in path.parts


def test_dockerignore_keeps_what_the_build_copies_and_nothing_local() -> None:
    patterns = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    copied = []
    for copy in _dockerfile("COPY"):
        if copy.startswith("--from="):
            continue
        *sources, _target = copy.split()
        for source in sources:
            top = ROOT / source
            assert top.exists(), source
            files = [top] if top.is_file() else [p for p in top.rglob("*") if p.is_file()]
            copied += [str(p.relative_to(ROOT)) for p in files if not _built_locally(p)]
    assert copied and [path for path in copied if _ignored(path, patterns)] == []
    # what setuptools needs to build the wheel is in the context
    assert PYPROJECT["project"]["readme"] in copied
    for package in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]:
        assert any(path.startswith(package.rstrip("*") + "/") for path in copied), package
    for local in (".venv/bin/python", ".git/config", "ysync-data/redis/x.aof", ".env",
                  "build/x.c", "ysync/updates/lib0.cpython-311-x86_64-linux-gnu.so",
                  "config.toml", "ysync/demo/src/node_modules/yjs/package.json"):
        assert _ignored(local, patterns), local


# --- compose ---------------------------------------------------------------------------------

def _compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return document


def _interpolated(value: str) -> str:
    """Compose's ${VAR:-default} with nothing set: the default."""
    return re.sub(r"\$\{(\w+)(?::?-([^}]*))?\}", lambda m: m.group(2) or "", value)


def _ysync_services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = _compose()["services"]
    return {name: s for name, s in services.items() if "build" in s}


def test_compose_runs_two_servers_a_worker_redis_postgres_and_nginx() -> None:
    services = _compose()["services"]
    commands = sorted(shlex.join(s["command"]) for s in _ysync_services().values())
    assert commands == ["ysync serve", "ysync serve", "ysync-worker"]
    assert {"redis", "postgres", "nginx"} <= set(services)
    redis = services["redis"]["command"]
    assert redis[redis.index("--appendonly") + 1] == "yes"
    assert not redis[redis.index("--maxmemory-policy") + 1].startswith("allkeys-")


def test_compose_services_use_settings_hosts_and_grace_periods(tmp_path: Path) -> None:
    services = _compose()["services"]
    for name, service in _ysync_services().items():
        _parse_command(service["command"])
        env = {key: _interpolated(str(value)) for key, value in service["environment"].items()}
        assert sorted(set(env) - KNOWN_ENV) == [], name
        config = _config(env, tmp_path)
        assert config.storage_kind == "postgres"
        for url in (config.redis.url, config.storage.postgres):
            assert urlsplit(url).hostname in services, f"{name}: {url}: no such service"
        grace = _seconds(service["stop_grace_period"])
        if _serves(service["command"]):
            assert grace > _stop_time(config), f"{name}: {grace} s"
        else:
            assert grace > config.storage.timeout, name
            assert config.worker.metrics_port > 0
            assert f":{config.worker.metrics_port}/healthz" in " ".join(
                service["healthcheck"]["test"])


def test_compose_builds_from_files_that_exist() -> None:
    for name, service in _ysync_services().items():
        context = (DEPLOY / service["build"]["context"]).resolve()
        assert (context / service["build"]["dockerfile"]).resolve() == DOCKERFILE, name
    for name, service in _compose()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).is_file(), f"{name}: {source} does not exist"


def _nginx_edit(tmp_path: Path) -> str:
    """Runs the edit of deploy/nginx.conf that compose's nginx command makes; returns the file."""
    nginx = _compose()["services"]["nginx"]
    mounts = {target: (DEPLOY / source).resolve() for source, target, *_ in
              (volume.split(":") for volume in nginx["volumes"])}
    (script,) = [part for part in nginx["command"][2].split(" && ") if part.startswith("sed ")]
    for target, source in mounts.items():
        script = script.replace(target, str(source))
    script = script.replace("/tmp/nginx/", f"{tmp_path}/")
    subprocess.run(["sh", "-c", script], check=True, timeout=30)
    return (tmp_path / "nginx.conf").read_text()


def test_compose_points_the_nginx_upstream_at_its_servers(tmp_path: Path) -> None:
    edited = _nginx_edit(tmp_path)
    upstream = re.search(r"upstream ysync \{(.*?)\}", edited, re.DOTALL)
    assert upstream, "deploy/nginx.conf has no `upstream ysync` block"
    servers = re.findall(r"^\s*server\s+(\S+)", upstream.group(1), re.MULTILINE)
    expected = sorted(f"{name}:{DEFAULTS.server.port}" for name, service in
                      _ysync_services().items() if _serves(service["command"]))
    assert sorted(servers) == expected, "the `# cluster: servers` lines of deploy/nginx.conf"
    if shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists():
        pytest.skip("nginx is not installed: the edited file is not checked by nginx -t")
    checked = tmp_path / "checked.conf"  # the names resolve only inside compose's network
    checked.write_text(re.sub(r"ysync-\d+:", "127.0.0.1:", edited))
    nginx_binary = shutil.which("nginx") or "/usr/sbin/nginx"
    result = subprocess.run([nginx_binary, "-t", "-p", f"{tmp_path}/", "-c", str(checked),
                             "-e", str(tmp_path / "error.log")],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


def test_compose_file_passes_docker_compose_config() -> None:
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose is not installed (apt-get install docker-compose)")
    result = subprocess.run(["docker-compose", "-f", str(COMPOSE), "config", "-q"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


# --- HAProxy and Caddy -----------------------------------------------------------------------

def test_haproxy_example_keeps_websockets_and_checks_readiness() -> None:
    text = (DEPLOY / "haproxy.cfg").read_text()
    tunnel = re.search(r"^\s*timeout tunnel (\S+)", text, re.MULTILINE)
    assert tunnel and _seconds(tunnel.group(1), unit="ms") > PING_ROUND
    for name in ("client", "server"):  # the upgrade and probes; the tunnel then takes over
        found = re.search(rf"^\s*timeout {name} (\S+)", text, re.MULTILINE)
        assert found and _seconds(found.group(1), unit="ms") > DEFAULTS.server.ping_interval
    assert "http-check send meth GET uri /readyz" in text
    assert not re.search(r"^\s*(stick|cookie|balance source)", text, re.MULTILINE)


def test_haproxy_example_is_valid() -> None:
    if shutil.which("haproxy") is None:
        pytest.skip("haproxy is not installed (apt-get install haproxy)")
    result = subprocess.run(["haproxy", "-c", "-f", str(DEPLOY / "haproxy.cfg")],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr


def test_caddy_example_checks_readiness_without_buffering() -> None:
    text = (DEPLOY / "Caddyfile").read_text()
    assert re.search(r"^\s*health_uri /readyz$", text, re.MULTILINE)
    assert re.search(r"^\s*flush_interval -1$", text, re.MULTILINE)
    assert "lb_policy cookie" not in text and "ip_hash" not in text
    # a bare `respond` runs after reverse_proxy in Caddy's directive order: it would never answer
    assert re.search(r"handle @internal \{\s*respond 404\s*\}", text)


def test_caddy_example_is_valid(tmp_path: Path) -> None:
    if shutil.which("caddy") is None:
        pytest.skip("caddy is not installed (apt-get install caddy)")
    result = subprocess.run(
        [shutil.which("caddy") or "caddy", "validate", "--adapter", "caddyfile",
         "--config", str(DEPLOY / "Caddyfile")],
        capture_output=True, text=True, timeout=60,
        env={"HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path),
             "XDG_CONFIG_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
