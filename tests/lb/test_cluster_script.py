"""scripts/cluster.py's pure parts: nginx runs deploy/nginx.conf with only the lines marked
``cluster:`` replaced (and accepts the result), the access log names no token, and its lines
parse."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import cluster as lb  # noqa: E402

SERVERS = ["127.0.0.1:4001", "127.0.0.1:4002", "127.0.0.1:4003"]


def unmarked(text: str) -> list[str]:
    return [line for line in text.splitlines() if "# cluster:" not in line]


def test_only_the_marked_lines_change() -> None:
    template = lb.NGINX_TEMPLATE.read_text()
    rendered = lb.nginx_config(template, "127.0.0.1:8080", SERVERS)
    assert unmarked(rendered) == unmarked(template)
    found = re.search(r"^\s*server \S+( [^;]*);\s*# cluster: servers$", template, re.MULTILINE)
    assert found is not None
    params = found[1]
    marked = [line.strip() for line in rendered.splitlines() if "# cluster:" in line]
    assert marked == [*(f"server {s}{params};  # cluster: servers" for s in SERVERS),
                      "listen 127.0.0.1:8080;  # cluster: listen"]


def test_a_template_without_the_marks_is_refused() -> None:
    template = lb.NGINX_TEMPLATE.read_text()
    with pytest.raises(lb.ClusterError, match="cluster: servers"):
        lb.nginx_config(template.replace("# cluster: servers", ""), "127.0.0.1:1", SERVERS)
    with pytest.raises(lb.ClusterError, match="cluster: listen"):
        lb.nginx_config(template.replace("# cluster: listen", ""), "127.0.0.1:1", SERVERS)


def test_the_access_log_format_names_no_token() -> None:
    """Tokens travel in the query string and in Sec-WebSocket-Protocol (docs/auth.md)."""
    template = lb.NGINX_TEMPLATE.read_text()
    found = re.search(r"log_format ysync([^;]*);", template)
    assert found is not None
    log_format = found[1]
    for variable in ("$request ", "$request'", "$request_uri", "$args", "$query_string",
                     "$arg_", "$http_sec_websocket_protocol", "$http_"):
        assert variable not in log_format


@pytest.mark.skipif(lb.find_nginx() is None, reason="nginx is not installed (scripts/install)")
def test_nginx_accepts_the_rendered_configuration(tmp_path: Path) -> None:
    nginx = lb.find_nginx()
    assert nginx is not None
    config = tmp_path / "nginx.conf"
    config.write_text(lb.nginx_config(lb.NGINX_TEMPLATE.read_text(),
                                      f"127.0.0.1:{lb.free_port()}", SERVERS))
    done = subprocess.run([nginx, "-t", "-p", f"{tmp_path}/", "-e", f"{tmp_path}/error.log",
                           "-c", str(config)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr


def test_access_log_lines_parse() -> None:
    text = (
        '127.0.0.1 [01/Dec/2026:12:00:00 +0000] 1764590400.250 3.125 "GET /room" 101 '
        '"127.0.0.1:4001, 127.0.0.1:4002" "503, 101" 1234\n'
        'not a line of ours\n'
        '127.0.0.1 [01/Dec/2026:12:00:00 +0000] 1764590401.000 0.000 "GET /healthz" 502 '
        '"-" "-" 150\n')
    first, second = lb.parse_access_log(text)
    assert first.start == pytest.approx(1764590397.125) and first.end == 1764590400.25
    assert (first.method, first.uri, first.status) == ("GET", "/room", 101)
    assert first.upstreams == ("127.0.0.1:4001", "127.0.0.1:4002")
    assert first.upstream == "127.0.0.1:4002" and first.upstream_statuses == ("503", "101")
    assert second.upstreams == () and second.upstream == "" and second.status == 502


def test_metrics_parse() -> None:
    text = ('# HELP ysync_connections open client connections\n'
            'ysync_connections 3.0\n'
            'ysync_messages_received_total{type="update"} 7.0\n')
    assert lb.parse_metrics(text) == {"ysync_connections": 3.0,
                                      'ysync_messages_received_total{type="update"}': 7.0}


def test_peak_count() -> None:
    assert lb.peak_count([], 0.5) == 0
    assert lb.peak_count([0.0, 0.1, 0.2, 1.0, 1.2, 1.3, 1.4], 0.5) == 4
    assert lb.peak_count([3.0, 0.0, 0.5, 1.0], 0.5) == 1
