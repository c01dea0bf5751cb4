"""redis.tls_* settings: checked when loading, turned into redis-py's ssl_* options."""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import pytest

from ysync.config import load_config
from ysync.errors import ConfigError
from ysync.redis_clients import redis_options

CA = ssl.get_default_verify_paths().cafile or ""


def load(**env: str):  # type: ignore[no-untyped-def]
    return load_config(os.devnull, environ=env)


def test_no_options_without_rediss() -> None:
    config = load(REDIS="redis://127.0.0.1:6379/0")
    assert redis_options(config.redis.url, config) == {}
    assert redis_options("unix:///tmp/redis.sock", load()) == {}


def test_rediss_verifies_fully_by_default() -> None:
    config = load(REDIS="rediss://redis.internal:6380/0")
    assert redis_options(config.redis.url, config) == {"ssl_cert_reqs": "required",
                                                       "ssl_check_hostname": True}


@pytest.mark.skipif(not CA or not Path(CA).is_file(), reason="no system CA bundle file")
@pytest.mark.parametrize(("verify", "reqs", "hostname"), [
    ("full", "required", True), ("ca", "required", False), ("none", "none", False)])
def test_ca_file_and_verify_modes(verify: str, reqs: str, hostname: bool) -> None:
    config = load(REDIS="rediss://h:6380", YSYNC_REDIS_TLS_CA_FILE=CA,
                  YSYNC_REDIS_TLS_VERIFY=verify)
    assert redis_options(config.redis.url, config) == {
        "ssl_cert_reqs": reqs, "ssl_check_hostname": hostname, "ssl_ca_certs": CA}
    assert any("not checked" in w for w in config.warnings) == (verify == "none")


@pytest.mark.parametrize(("env", "message"), [
    ({"YSYNC_REDIS_TLS_VERIFY": "ca"}, "setting redis.tls_verify (YSYNC_REDIS_TLS_VERIFY): "
                                       "TLS needs a rediss:// redis.url (REDIS), got empty"),
    ({"REDIS": "redis://:pw@h:6379", "YSYNC_REDIS_TLS_CERT_FILE": "/etc/hostname"},
     "TLS needs a rediss:// redis.url (REDIS), got 'redis://:<secret>@h:6379'"),
    ({"REDIS": "rediss://h", "YSYNC_REDIS_TLS_CA_FILE": "/no/ca.pem"},
     "setting redis.tls_ca_file (YSYNC_REDIS_TLS_CA_FILE): no such file: '/no/ca.pem'"),
    ({"REDIS": "rediss://h", "YSYNC_REDIS_TLS_CA_FILE": "/etc"},
     "setting redis.tls_ca_file (YSYNC_REDIS_TLS_CA_FILE): not a file: '/etc'"),
    ({"REDIS": "rediss://h", "YSYNC_REDIS_TLS_KEY_FILE": "/etc/hostname"},
     "setting redis.tls_cert_file (YSYNC_REDIS_TLS_CERT_FILE): required when "
     "redis.tls_key_file is set"),
])
def test_bad_tls_settings_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(**env)
    assert message in str(caught.value)


def test_a_file_that_is_no_pem_is_refused_without_its_contents(tmp_path: Path) -> None:
    key = tmp_path / "client.key"
    key.write_text("-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ConfigError) as caught:
        load(REDIS="rediss://h", YSYNC_REDIS_TLS_CERT_FILE=str(key),
             YSYNC_REDIS_TLS_KEY_FILE=str(key))
    text = str(caught.value)
    assert text.startswith("settings redis.tls_cert_file and redis.tls_key_file")
    assert "c2VjcmV0" not in text
