"""The Docker-host deployer's translation: a ``DockerTarget`` into the container config
Docker's Engine API takes (``POST /containers/create``), the names and labels of what a
deploy makes. Pure (no daemon, no I/O), so it is tested without one; ``docker_host.py``
does the talking (as the executor keeps ``docker_convert`` apart from ``docker``). Image
references and registry logins are ``shared.adapters.registry``'s, as for the executor.

* Labels: ``io.cyclone.deployed=1`` and ``io.cyclone.deploy.image=<reference>``. Never
  the executor's ``io.cyclone.managed`` / ``io.cyclone.run``: its cleanup removes all
  that carries them, and a deployed container outlives every run.
* Names: the container keeps the target's name; while a deploy runs, the new one is
  created as ``<name>-cyclone-next`` and the old one renamed ``<name>-cyclone-previous``
  (kept, stopped, until the new one is healthy).
* Ports: ``[IP:]HOST:CONTAINER[/PROTO]`` as ``docker run -p`` takes them (also
  ``CONTAINER`` alone and ``IP::CONTAINER`` for a port Docker picks, ``[v6]:HOST:CONTAINER``).
* Health check: the target's command as ``CMD-SHELL``, probed every
  ``HEALTH_INTERVAL_S`` (Docker's default, 30 s, would add half a minute to every
  deploy), with a start period as long as the deploy's health timeout: a slow-booting
  app's failed probes do not count during the time the deploy gives it to come up.
* Restart policy: the container is created with none, so an exit while the deploy
  waits stays visible (exited, with its code) rather than being restarted away; the
  target's policy (``restart_policy``) is set once it is healthy.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared.pipeline.plan import DockerTarget

__all__ = [
    "HEALTH_INTERVAL_S",
    "HEALTH_PROBE_TIMEOUT_S",
    "HEALTH_RETRIES",
    "LABEL_DEPLOYED",
    "LABEL_DEPLOY_IMAGE",
    "NEXT_SUFFIX",
    "PREVIOUS_SUFFIX",
    "PortSpec",
    "container_config",
    "deploy_labels",
    "has_health_check",
    "healthcheck_config",
    "next_name",
    "parse_port",
    "port_config",
    "previous_name",
    "restart_policy",
]

LABEL_DEPLOYED = "io.cyclone.deployed"
LABEL_DEPLOY_IMAGE = "io.cyclone.deploy.image"
PREVIOUS_SUFFIX = "-cyclone-previous"
NEXT_SUFFIX = "-cyclone-next"

HEALTH_INTERVAL_S = 1.0  # how often a deployed container's health check runs
HEALTH_PROBE_TIMEOUT_S = 10.0  # one probe running longer than this fails
HEALTH_RETRIES = 3  # failed probes in a row (after the start period) make it unhealthy

_PROTOCOLS = ("tcp", "udp", "sctp")
_RESTARTS = ("no", "always", "unless-stopped", "on-failure")
_NS = 1_000_000_000  # Docker's durations are in nanoseconds


def previous_name(container: str) -> str:
    """What the replaced container is called until the deploy is over."""
    return container + PREVIOUS_SUFFIX


def next_name(container: str) -> str:
    """What the new container is called between its creation and the switch."""
    return container + NEXT_SUFFIX


def deploy_labels(image: str) -> dict[str, str]:
    return {LABEL_DEPLOYED: "1", LABEL_DEPLOY_IMAGE: image}


# -- ports ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PortSpec:
    """One published port: ``host_port`` "" lets Docker pick one."""

    container_port: int
    protocol: str = "tcp"
    host_ip: str = ""
    host_port: str = ""

    @property
    def key(self) -> str:
        """As Docker's ExposedPorts and PortBindings name it: ``80/tcp``."""
        return f"{self.container_port}/{self.protocol}"


def parse_port(spec: str) -> PortSpec:
    """``[IP:]HOST:CONTAINER[/PROTO]`` (also ``CONTAINER``, ``IP::CONTAINER`` and
    ``[IPv6]:HOST:CONTAINER``); ValueError saying what is wrong."""
    body, _, protocol = spec.strip().partition("/")
    protocol = protocol.lower() or "tcp"
    if protocol not in _PROTOCOLS:
        raise ValueError(f"port {spec!r}: unknown protocol {protocol!r} "
                         f"(one of {', '.join(_PROTOCOLS)})")
    host_ip = ""
    if body.startswith("["):  # [::1]:8080:80
        address, bracket, body = body[1:].partition("]:")
        if not bracket:
            raise ValueError(f"port {spec!r}: expected [IPv6]:HOST:CONTAINER")
        host_ip, parts = address, body.split(":")
        if len(parts) != 2:
            raise ValueError(f"port {spec!r}: expected [IPv6]:HOST:CONTAINER")
    else:
        parts = body.split(":")
        if len(parts) == 3:
            host_ip, parts = parts[0], parts[1:]
        elif len(parts) not in (1, 2):
            raise ValueError(f"port {spec!r}: expected [IP:]HOST:CONTAINER[/PROTO]")
    if host_ip:
        try:
            ipaddress.ip_address(host_ip)
        except ValueError:
            raise ValueError(f"port {spec!r}: {host_ip!r} is not an IP address") from None
    host_port = parts[0] if len(parts) == 2 else ""
    if host_port:
        _port_number(spec, host_port)
    return PortSpec(container_port=_port_number(spec, parts[-1]), protocol=protocol,
                    host_ip=host_ip, host_port=host_port)


def _port_number(spec: str, text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"port {spec!r}: {text!r} is not a port number (1-65535)")
    return int(text)


def port_config(ports: tuple[str, ...]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(ExposedPorts, HostConfig.PortBindings) for the target's ``ports``."""
    exposed: dict[str, Any] = {}
    bindings: dict[str, list[dict[str, str]]] = {}
    for spec in ports:
        port = parse_port(spec)
        exposed[port.key] = {}
        bindings.setdefault(port.key, []).append(
            {"HostIp": port.host_ip, "HostPort": port.host_port})
    return exposed, bindings


# -- restart, health --------------------------------------------------------------------


def restart_policy(restart: str) -> dict[str, Any]:
    """``no``, ``always``, ``unless-stopped``, ``on-failure[:N]`` as HostConfig.RestartPolicy."""
    name, colon, count = restart.strip().partition(":")
    if name not in _RESTARTS:
        raise ValueError(f"restart policy {restart!r}: one of no, always, unless-stopped, "
                         "on-failure[:N]")
    if colon and (name != "on-failure" or not count.isdigit()):
        raise ValueError(f"restart policy {restart!r}: only on-failure takes a count "
                         "(on-failure:N)")
    return {"Name": name, "MaximumRetryCount": int(count) if count else 0}


def healthcheck_config(command: str, timeout_s: float) -> dict[str, Any]:
    """The target's ``healthcheck`` (a shell command) as Config.Healthcheck; failed probes
    in the first ``timeout_s`` (the deploy's health timeout) do not count."""
    return {
        "Test": ["CMD-SHELL", command],
        "Interval": int(HEALTH_INTERVAL_S * _NS),
        "Timeout": int(HEALTH_PROBE_TIMEOUT_S * _NS),
        "Retries": HEALTH_RETRIES,
        "StartPeriod": int(max(timeout_s, 0.0) * _NS),
    }


def has_health_check(inspected: Mapping[str, Any]) -> bool:
    """Whether a container (``GET /containers/{id}/json``) has a health check: its own or
    its image's (Docker merges them into Config.Healthcheck), not disabled (``NONE``)."""
    test = ((inspected.get("Config") or {}).get("Healthcheck") or {}).get("Test") or []
    return bool(test) and test[0] != "NONE"


# -- the container ----------------------------------------------------------------------


def container_config(target: DockerTarget, image: str) -> dict[str, Any]:
    """The ``POST /containers/create`` body for ``image`` at ``target``; ValueError when the
    target's ports or restart policy are malformed. Created without a restart policy (see
    the module's docstring); ``restart_policy(target.restart)`` is set once it is healthy."""
    restart_policy(target.restart)  # malformed: refused before anything is touched
    exposed, bindings = port_config(target.ports)
    host_config: dict[str, Any] = {
        "PortBindings": bindings,
        "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0},
    }
    if target.network:
        host_config["NetworkMode"] = target.network
    config: dict[str, Any] = {
        "Image": image,
        "Env": [f"{key}={value}" for key, value in target.env.items()],
        "Labels": deploy_labels(image),
        "ExposedPorts": exposed,
        "HostConfig": host_config,
    }
    if target.command:
        config["Cmd"] = list(target.command)
    if target.healthcheck:
        config["Healthcheck"] = healthcheck_config(target.healthcheck, target.health_timeout_s)
    return config
