"""The Ray cluster a search runs on: joining one (``--address``) or starting a private one, and
checking that a trial fits on it.

A run joins the cluster at ``--address`` (else ``$RAY_ADDRESS``); without either it starts a
private cluster on this machine, whose servers listen on loopback only. The checks here run
before anything slow, so that a wrong address or a trial no node can hold is one line in
seconds, not minutes of Ray's retries or a trial that waits forever.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import os
import socket
from collections.abc import Callable

import torch

from evaluators.device import available_cpus
from search.settings import RunSettings, SettingsError
from space import UserError

__all__ = ["ray_address", "address_option", "check_reachable", "init_ray", "this_machine",
           "cluster_nodes", "check_fits", "slots"]

# Ray's switch for clusters of several machines, on by default except on macOS and Windows.
# Off, Ray keeps the loopback address as the node's address instead of replacing 127.0.0.1 by
# the machine's network address (ray._private.services.resolve_ip_for_localhost), and its
# servers (GCS, raylet, object manager, workers) listen on the node's address only.
RAY_SINGLE_MACHINE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def ray_address(given: str | None) -> str | None:
    """The Ray cluster to join (``--address`` as ``given``, else ``$RAY_ADDRESS``), or None for
    a private one."""
    return given or os.environ.get("RAY_ADDRESS") or None


def address_option(given: str | None) -> str:
    """Where the address came from (``--address`` as ``given``), for error messages."""
    return "--address" if given else "$RAY_ADDRESS"


def check_reachable(address: str, *, option: str = "--address") -> None:
    """Fail in seconds, not after Ray's minutes of retries, when nothing listens at ``address``."""
    if "://" in address or address == "local":
        return  # Ray Client (ray://), or a new local cluster: Ray's error messages apply
    given = address
    if address == "auto":
        env = os.environ.get("RAY_ADDRESS", "")
        if env and env != "auto":  # what Ray's "auto" joins first
            return check_reachable(env, option=f"$RAY_ADDRESS (which {option} auto defers to)")
        address = _discover_ray_address(option)  # its last-cluster file, else a running head
        if address is None:
            return
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit():
        raise UserError(f"{option} {address!r}: expected HOST:PORT of a Ray head node, e.g. "
                        "10.0.0.5:6379 (the address 'ray start --head' prints)")
    for h in _hosts_to_try(host):
        try:
            socket.create_connection((h, int(port)), timeout=5).close()
            return
        except OSError:
            continue
    if given == "auto":
        raise UserError(f"{option} auto: Ray's record of the last cluster started here points "
                        f"at {address}, where no Ray cluster answers (a stopped or killed one); "
                        "run 'ray stop' to clear it and 'ray start --head' to start one, or "
                        "leave --address out to run on this machine alone")
    raise UserError(f"{option} {address}: no Ray cluster answers there; start one with "
                    "'ray start --head --port PORT' on the head node, check the address and the "
                    "firewall, or leave --address out to run on this machine alone")


def _hosts_to_try(host: str) -> list[str]:
    """``host``, and for a loopback host this machine's network address too: Ray connects to
    that one instead, found as Ray finds it (the source address of a route out; a UDP
    "connect" sends nothing)."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    hosts = [host]
    if loopback:
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.connect(("8.8.8.8", 80))
                hosts.append(probe.getsockname()[0])
        except OSError:
            pass
    return hosts


def _discover_ray_address(option: str) -> str | None:
    """The HOST:PORT that Ray's ``address="auto"`` would join (its record of the last cluster
    started on this machine, else a running head found here); a one-line error when there is
    none. None when Ray's discovery API is not there to ask (Ray's own errors then apply)."""
    try:
        from ray._private.services import get_ray_address_from_environment
    except ImportError:
        return None
    try:
        found = get_ray_address_from_environment("auto", None)
    except ConnectionError:
        raise UserError(f"{option} auto: no Ray cluster is running on this machine; start one "
                        "with 'ray start --head', pass the HOST:PORT of a remote head node, or "
                        "leave --address out to run on this machine alone") from None
    return found if isinstance(found, str) and found != "auto" else None


def init_ray(given: str | None) -> None:
    """Join the cluster at ``--address`` (``given``, else ``$RAY_ADDRESS``), or start a private
    one on this machine."""
    # Ray reads these when it is imported.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the old reporter is silent at verbose=0
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # rows are ours to write
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    address = ray_address(given)
    if address is None:
        os.environ[RAY_SINGLE_MACHINE_ENV] = "0"  # a private cluster on loopback (see below)
    import ray

    if ray.is_initialized():
        return
    common = {"log_to_driver": False, "logging_level": logging.ERROR,
              "configure_logging": True}
    if address:
        try:
            ray.init(address=address, **common)
        except (ConnectionError, RuntimeError, ValueError, ray.exceptions.RayError) as exc:
            raise _join_error(address, address_option(given), exc) from None
        return
    # A private, local cluster: every Ray server on loopback (RAY_SINGLE_MACHINE_ENV, set
    # above before Ray is imported), and no dashboard. Ray reads that variable once, at import:
    # where something imported Ray earlier (a notebook, a test session), its constant is set too.
    from ray._private import ray_constants

    if getattr(ray_constants, "ENABLE_RAY_CLUSTER", False):
        ray_constants.ENABLE_RAY_CLUSTER = False
    ray.init(include_dashboard=False, _node_ip_address="127.0.0.1", **common)
    host = ray.get_runtime_context().gcs_address.rpartition(":")[0].strip("[]")
    if not ipaddress.ip_address(host).is_loopback:
        ray.shutdown()
        raise RuntimeError(
            f"the private Ray cluster came up on {host}, not on loopback, so other machines "
            f"could reach it; set {RAY_SINGLE_MACHINE_ENV}=0 before Ray is imported")


def _join_error(address: str, option: str, exc: Exception) -> UserError:
    """Why Ray could not join the cluster at ``address``, with the fix."""
    why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if address.startswith("ray://"):
        return UserError(f"{option} {address}: Ray Client could not connect ({why}); run "
                         "GhostNAS on a node of the cluster with --address HEAD:6379 instead")
    # Something listens there (check_reachable), but Ray could not join it: most often a
    # cluster with token authentication (Ray >= 2.52) and a driver without the token.
    return UserError(f"{option} {address}: the Ray cluster there refused this driver ({why}); "
                     "if it uses token authentication, set RAY_AUTH_MODE=token and its token "
                     "(RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token) as on its "
                     "nodes, and use the same Ray version as the cluster")


def this_machine() -> dict[str, float]:
    """The CPUs and GPUs trials can use here: the CPUs this process may run on (Ray may count
    more, the machine's or the container quota's, but trials would only share these), the CUDA
    devices torch sees."""
    return {"CPU": float(available_cpus()), "GPU": float(torch.cuda.device_count())}


def cluster_nodes() -> list[dict[str, float]]:
    """Each live Ray node's total resources."""
    import ray

    return [node["Resources"] for node in ray.nodes() if node.get("Alive")]


def check_fits(settings: RunSettings, nodes: list[dict[str, float]], *, where: str,
               log: Callable[[str], None]) -> None:
    """A trial runs on one node: if none has ``--cpus-per-trial`` CPUs and ``--gpus-per-trial``
    GPUs, no trial would ever start (Ray waits for such a node). On this machine that is an
    error; on a cluster, a warning (an autoscaler may add one)."""
    need = {"CPU": settings.cpus_per_trial, "GPU": settings.gpus_per_trial}
    if any(all(node.get(k, 0.0) + 1e-9 >= v for k, v in need.items()) for node in nodes):
        return
    have = ", ".join(f"{node.get('CPU', 0):g} CPUs/{node.get('GPU', 0):g} GPUs"
                     for node in nodes[:4]) or "no live node"
    what = (f"--cpus-per-trial {settings.cpus_per_trial:g} --gpus-per-trial "
            f"{settings.gpus_per_trial:g}: no node of {where} has that much ({have})")
    if settings.address is None:
        raise SettingsError(f"{what}; lower them (or run on a cluster with --address)")
    log(f"warning: {what}; trials wait until such a node joins (an autoscaler may add one; "
        "Ctrl-C stops)")


def slots(resources: dict[str, float]) -> int:
    """How many trials of ``resources`` (Tune's names: ``cpu``, ``gpu``) fit on the cluster at
    once."""
    import ray

    total = ray.cluster_resources()
    fits = [math.floor(total.get(k.upper() if k in ("cpu", "gpu") else k, 0.0) / v + 1e-9)
            for k, v in resources.items() if v > 0]
    return max(1, min(fits)) if fits else 1
