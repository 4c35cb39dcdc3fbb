"""A Kubernetes API stand-in for the deployer's tests (no real cluster runs on the CI
machine): the few calls a deploy makes, over real HTTPS, checked as strictly as the API
server would check them, with rollouts played out over successive reads.

* ``k8s`` (fixture; its Python name is ``k8s_fixture``, made visible with
  ``from tests.k8s_standin import k8s_fixture``): a stand-in on 127.0.0.1 and a free
  port, with a certificate for 127.0.0.1 from a throwaway CA; stopped after the test.
* ``k8s.add("web", {"app": "registry.test/web:1"}, replicas=3, scenario="stalls")``
  makes a Deployment (generation 1, its rollout complete). Scenarios, for a rollout of
  any other images than the ones it was made with:

  - ``succeeds``: the read after a change still shows the old generation observed;
    from the next read on the controller has observed it, and each read updates one
    more replica (and makes the one before available) until all are;
  - ``stalls``: observed, but ``updatedReplicas`` stops one short and the available
    ones stay one behind it (a rollback to the images it was made with completes);
  - ``exceeds``: stalls, and from the third read the ``Progressing`` condition says
    ``ProgressDeadlineExceeded``;
  - ``refused``: every PATCH is answered 403 Forbidden.

  ``k8s.bad_images`` holds images whose rollouts stall whatever the scenario (only while
  the template holds one, so an undo to a good image completes); ``k8s.crashing_images``
  images whose pods crash: their rollouts stall and, from the third read, the progress
  deadline is exceeded (as with ``exceeds``, and as a Deployment whose
  ``progressDeadlineSeconds`` passed says of crash-looping pods). ``k8s.outage`` holds
  the numbers of requests (0 is the first) answered 503, as an API server restarting.
* ``k8s.secrets()``: the ``KUBE_SERVER``/``KUBE_TOKEN``/``KUBE_CA`` secrets a target
  needs (keyword arguments replace or, given ``None``, drop one);
  ``other_ca_pem()`` a CA that did not sign the stand-in's certificate.
* ``k8s.requests``: every request, as received (method, path, headers, parsed body),
  also the refused ones; ``k8s.deployment("web").images`` what its template holds now,
  ``.observed_images`` the template the controller has observed (what its newest pods
  run), ``.rolled_out`` whether the status says that template's rollout is complete.
* ``k8s.roll_out("web")``: the controller going on with nobody watching (as if read
  again and again), until the rollout completes or, stalled, as far as it gets.

What it checks (any other request is answered as the API server would refuse it, with a
Kubernetes ``Status`` body): ``GET`` or ``PATCH`` of
``/apis/apps/v1/namespaces/{ns}/deployments/{name}`` only (else 404/405), ``Authorization:
Bearer <k8s.token>`` (else 401), a PATCH's ``Content-Type:
application/strategic-merge-patch+json`` (else 415) and its body: exactly
``{"spec": {"template": {"spec": {"containers": [{"name", "image"}, ...]}}}}`` naming
containers the template has (else 422; the real API server would add such a container).
A PATCH that changes the template bumps ``metadata.generation``; one that does not,
does not.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import secrets as token_source
import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["DEPLOYMENT_PATH", "K8sStandin", "Recorded", "Scenario", "StandinDeployment",
           "k8s_fixture", "other_ca_pem", "serve_standin"]

Scenario = Literal["succeeds", "stalls", "exceeds", "refused"]
DEPLOYMENT_PATH = "/apis/apps/v1/namespaces/{namespace}/deployments/{name}"
PATCH_TYPE = "application/strategic-merge-patch+json"


@dataclass(frozen=True)
class Recorded:
    """One request as the stand-in received it."""

    method: str
    path: str
    headers: Mapping[str, str]  # case-insensitive
    body: Any  # the parsed JSON body; the raw text when it is not JSON; None when empty


@dataclass
class StandinDeployment:
    name: str
    namespace: str
    images: dict[str, str]  # the pod template's containers, name -> image, in order
    replicas: int = 3
    scenario: Scenario = "succeeds"
    generation: int = 1
    original: dict[str, str] = field(default_factory=dict)  # the images it was made with
    observed_images: dict[str, str] = field(default_factory=dict)  # as of observedGeneration
    status: dict[str, Any] = field(default_factory=dict)
    reads: int = 0  # GETs since the template last changed

    def __post_init__(self) -> None:
        self.original = dict(self.images)
        self.observed_images = dict(self.images)
        self.status = _status(1, self.replicas, self.replicas, self.replicas, self.replicas)

    def set_images(self, images: Mapping[str, str]) -> None:
        """A template change: a new generation, whose rollout starts on the next reads."""
        changed = {**self.images, **images}
        if changed != self.images:
            self.images = changed
            self.generation += 1
            self.reads = 0

    def read(self, bad_images: set[str], crashing_images: set[str]) -> dict[str, Any]:
        """The object as a GET returns it, the rollout one read further."""
        self.status = self._advance(bad_images, crashing_images)
        if self.status["observedGeneration"] == self.generation:
            self.observed_images = dict(self.images)
        self.reads += 1
        return self.manifest()

    @property
    def rolled_out(self) -> bool:
        """Whether the status says the template's rollout is complete (kubectl's test)."""
        status, want = self.status, self.replicas
        return bool(status["observedGeneration"] == self.generation
                    and status["updatedReplicas"] == status["replicas"] == want
                    and status["availableReplicas"] == want)

    def _advance(self, bad_images: set[str], crashing_images: set[str]) -> dict[str, Any]:
        n, want = self.reads, self.replicas
        if self.generation == 1 or n == 0:  # not changed, or not observed yet
            return self.status
        crashing = bool(crashing_images.intersection(self.images.values()))
        if crashing or self.stalls(bad_images):
            updated = min(n, want - 1)
            available = max(updated - 1, 0)
            exceeded = (crashing or self.scenario == "exceeds") and n >= 3
            return _status(self.generation, want, updated, updated + want, available,
                           exceeded)
        updated, available = min(n, want), min(n - 1, want)
        return _status(self.generation, want, updated, updated + want - available, available)

    def stalls(self, bad_images: set[str]) -> bool:
        if bad_images.intersection(self.images.values()):
            return True
        return self.scenario in ("stalls", "exceeds") and self.images != self.original

    def manifest(self) -> dict[str, Any]:
        labels = {"app": self.name}
        containers = [{"name": n, "image": i, "imagePullPolicy": "IfNotPresent"}
                      for n, i in self.images.items()]
        return {
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": self.name, "namespace": self.namespace,
                         "generation": self.generation, "labels": labels},
            "spec": {"replicas": self.replicas, "selector": {"matchLabels": labels},
                     "progressDeadlineSeconds": 600,
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": containers}}},
            "status": self.status,
        }


def _status(observed: int, replicas: int, updated: int, total: int, available: int,
            exceeded: bool = False) -> dict[str, Any]:
    progressing = ({"type": "Progressing", "status": "False",
                    "reason": "ProgressDeadlineExceeded",
                    "message": 'ReplicaSet "web-7d9c" has timed out progressing.'}
                   if exceeded else
                   {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated",
                    "message": 'ReplicaSet "web-7d9c" is progressing.'})
    return {"observedGeneration": observed, "replicas": total, "updatedReplicas": updated,
            "readyReplicas": available, "availableReplicas": available,
            "unavailableReplicas": max(replicas - available, 0),
            "conditions": [progressing]}


@dataclass
class K8sStandin:
    url: str  # https://127.0.0.1:<port>
    ca_pem: str  # the CA that signed the server's certificate
    token: str = field(default_factory=lambda: "k8s-" + token_source.token_hex(16))
    deployments: dict[tuple[str, str], StandinDeployment] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    bad_images: set[str] = field(default_factory=set)
    crashing_images: set[str] = field(default_factory=set)
    outage: set[int] = field(default_factory=set)  # requests (0, 1...) answered 503

    def add(self, name: str, images: Mapping[str, str], *, namespace: str = "default",
            replicas: int = 3, scenario: Scenario = "succeeds") -> StandinDeployment:
        made = StandinDeployment(name, namespace, dict(images), replicas, scenario)
        self.deployments[namespace, name] = made
        return made

    def deployment(self, name: str, namespace: str = "default") -> StandinDeployment:
        return self.deployments[namespace, name]

    def roll_out(self, name: str, namespace: str = "default") -> StandinDeployment:
        """Let the controller go on with the rollout of the Deployment's template, with
        nobody watching, until it is complete or (stalled) as far as it gets."""
        deployment = self.deployment(name, namespace)
        for _ in range(2 * deployment.replicas + 4):  # a rollout takes replicas + 2 reads
            if deployment.rolled_out:
                break
            deployment.read(self.bad_images, self.crashing_images)
        return deployment

    def secrets(self, **override: str | None) -> dict[str, str]:
        values: dict[str, str | None] = {"KUBE_SERVER": self.url, "KUBE_TOKEN": self.token,
                                         "KUBE_CA": self.ca_pem}
        values.update(override)
        return {k: v for k, v in values.items() if v is not None}

    @staticmethod
    def path(name: str, namespace: str = "default") -> str:
        return DEPLOYMENT_PATH.format(namespace=namespace, name=name)


# --- the server ----------------------------------------------------------------------

def _app(standin: K8sStandin) -> web.Application:
    app = web.Application(middlewares=[_recorded(standin), _authenticated(standin)])
    app.router.add_route("*", DEPLOYMENT_PATH, _deployment_handler(standin))
    app.router.add_route("*", "/{tail:.*}", _not_found)
    return app


def _recorded(standin: K8sStandin) -> Any:
    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        text = await request.text()
        try:
            body: Any = json.loads(text) if text else None
        except ValueError:
            body = text
        standin.requests.append(Recorded(request.method, request.path,
                                         request.headers.copy(), body))
        if len(standin.requests) - 1 in standin.outage:
            return _failure(503, "ServiceUnavailable", "the server is currently unable to "
                            "handle the request")
        response: web.StreamResponse = await handler(request)
        return response
    return record


def _authenticated(standin: K8sStandin) -> Any:
    @web.middleware
    async def authenticate(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {standin.token}":
            return _failure(401, "Unauthorized", "Unauthorized")
        response: web.StreamResponse = await handler(request)
        return response
    return authenticate


def _deployment_handler(standin: K8sStandin) -> Any:
    async def handle(request: web.Request) -> web.Response:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        deployment = standin.deployments.get((namespace, name))
        if request.method not in ("GET", "PATCH"):
            return _failure(405, "MethodNotAllowed",
                            "the server does not allow this method on the requested resource")
        if deployment is None:
            return _failure(404, "NotFound", f'deployments.apps "{name}" not found')
        if request.method == "GET":
            return web.json_response(deployment.read(standin.bad_images,
                                                     standin.crashing_images))
        return await _patch(request, deployment)
    return handle


async def _patch(request: web.Request, deployment: StandinDeployment) -> web.Response:
    if deployment.scenario == "refused":  # authorization comes before the body is read
        return _failure(403, "Forbidden", (
            f'deployments.apps "{deployment.name}" is forbidden: User '
            '"system:serviceaccount:ci:deployer" cannot patch resource "deployments" in API '
            f'group "apps" in the namespace "{deployment.namespace}"'))
    if request.content_type != PATCH_TYPE:
        return _failure(415, "UnsupportedMediaType", (
            "the body of the request was in an unknown format - accepted media types "
            "include: application/json-patch+json, application/merge-patch+json, "
            f"application/apply-patch+yaml, {PATCH_TYPE}"))
    try:
        images = _patched_images(json.loads(await request.text()), deployment)
    except ValueError as exc:
        return _failure(422, "Invalid", f'Deployment.apps "{deployment.name}" is invalid: {exc}')
    deployment.set_images(images)
    return web.json_response(deployment.manifest())


def _patched_images(body: Any, deployment: StandinDeployment) -> dict[str, str]:
    """The images a patch sets, when it is exactly the documented shape (else ValueError)."""
    spec = _only(body, "spec")
    containers = _only(_only(_only(spec, "template"), "spec"), "containers")
    if not isinstance(containers, list) or not containers:
        raise ValueError("spec.template.spec.containers: must be a non-empty list")
    images: dict[str, str] = {}
    for at, container in enumerate(containers):
        where = f"spec.template.spec.containers[{at}]"
        if not isinstance(container, dict) or set(container) != {"name", "image"}:
            raise ValueError(f"{where}: only name and image may be patched")
        name, image = container["name"], container["image"]
        if not isinstance(name, str) or not isinstance(image, str) or not image:
            raise ValueError(f"{where}: name and image must be non-empty strings")
        if name not in deployment.images or name in images:
            raise ValueError(f"{where}.name: {name!r} is not a container of the template "
                             "or is named twice")
        images[name] = image
    return images


def _only(value: Any, key: str) -> Any:
    if not isinstance(value, dict) or set(value) != {key}:
        raise ValueError(f"expected an object with the single key {key!r}")
    return value[key]


async def _not_found(request: web.Request) -> web.Response:
    return _failure(404, "NotFound", "the server could not find the requested resource")


def _failure(code: int, reason: str, message: str) -> web.Response:
    return web.json_response({"kind": "Status", "apiVersion": "v1", "metadata": {},
                              "status": "Failure", "message": message, "reason": reason,
                              "code": code}, status=code)


# --- certificates --------------------------------------------------------------------

@dataclass(frozen=True)
class _Ca:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()


def _new_ca(name: str) -> _Ca:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (_builder(subject, subject, key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_usage(cert_sign=True), critical=True)
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256()))
    return _Ca(key, cert)


def _server_cert(ca: _Ca) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A certificate for IP 127.0.0.1 (what a kubeconfig's https://IP:port names)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")])
    ca_ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (_builder(subject, ca.cert.subject, key.public_key())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage(cert_sign=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                ca_ski), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(ca.key, hashes.SHA256()))
    return key, cert


def _builder(subject: x509.Name, issuer: x509.Name,
             public_key: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1)))


def _usage(cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=not cert_sign, key_cert_sign=cert_sign,
                         crl_sign=cert_sign, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, encipher_only=False,
                         decipher_only=False)


def other_ca_pem() -> str:
    """A CA certificate that did not sign the stand-in's (a CA secret that does not match)."""
    return _new_ca("some other cluster CA").pem


def _server_tls(directory: Path) -> tuple[ssl.SSLContext, str]:
    """The server's TLS context and the PEM of the CA that signed its certificate."""
    ca = _new_ca("stand-in cluster CA")
    key, cert = _server_cert(ca)
    cert_file, key_file = directory / "apiserver.crt", directory / "apiserver.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return context, ca.pem


@asynccontextmanager
async def serve_standin(directory: Path) -> AsyncIterator[K8sStandin]:
    """A stand-in serving HTTPS on 127.0.0.1 and a free port (its key under ``directory``)."""
    directory.mkdir(parents=True, exist_ok=True)
    context, ca_pem = _server_tls(directory)
    standin = K8sStandin(url="", ca_pem=ca_pem)
    runner = web.AppRunner(_app(standin), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context).start()
        host, port = runner.addresses[0][:2]
        standin.url = f"https://{host}:{port}"
        yield standin
    finally:
        await runner.cleanup()


@pytest.fixture(name="k8s")
async def k8s_fixture(tmp_path: Path) -> AsyncIterator[K8sStandin]:
    """A Kubernetes API stand-in for this test (see the module docstring)."""
    async with serve_standin(tmp_path / "k8s") as standin:
        yield standin
