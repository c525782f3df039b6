"""docker-compose.yml publishes nothing beyond the machine it runs on and holds no
password of its own: the values come from `.env`, and `.env.example` names each one.
(CI also resolves the file with `docker-compose config`; there is no engine to run it.)"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
REQUIRED = re.compile(r"\$\{(\w+):\?")


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def test_every_published_port_is_on_loopback() -> None:
    published = {name: service.get("ports", []) for name, service
                 in compose()["services"].items()}
    assert any(published.values())
    for name, ports in published.items():
        for port in ports:
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port}"


def test_flower_is_opt_in_and_asks_for_a_password() -> None:
    flower = compose()["services"]["flower"]
    assert flower["profiles"] == ["monitoring"]
    assert flower["environment"]["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")


def test_the_database_password_comes_from_env() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    postgres = compose()["services"]["postgres"]["environment"]
    assert postgres["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")
    urls = re.findall(r"DATABASE_URL: (\S+)", text)
    assert urls and all("${POSTGRES_PASSWORD:?" in url for url in urls)


def test_env_example_names_every_required_value() -> None:
    required = set(REQUIRED.findall((ROOT / "docker-compose.yml").read_text()))
    example = (ROOT / ".env.example").read_text()
    named = set(re.findall(r"^(\w+)=", example, flags=re.MULTILINE))
    assert required == {"POSTGRES_PASSWORD", "FLOWER_BASIC_AUTH"}
    assert required <= named
    assert re.search(r"^POSTGRES_PASSWORD=$", example, flags=re.MULTILINE)  # no default
