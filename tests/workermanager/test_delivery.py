"""The worker's delivery translation, on plain values: ``${{ images.NAME }}`` to digests,
tags' variables, OCI labels, registry logins and a deploy's secrets."""

from __future__ import annotations

import pytest

from services.workermanager.delivery import (
    OCI_REVISION,
    OCI_SOURCE,
    DeliveryError,
    JobImages,
    deploy_secrets,
    expand_tags,
    registries_for,
)
from services.workermanager.secrets import JobSecrets
from shared.pipeline.plan import (
    BuildSpec,
    DeploySpec,
    DockerTarget,
    JobSpec,
    KubernetesTarget,
    Plan,
    PromoteSpec,
    RegistryLogin,
    ServiceSpec,
    StepSpec,
)
from shared.ports.executor import PushedImage, RegistryAuth
from shared.projections.delivery import ImageView
from shared.projections.runs import RunView

DIGEST = "sha256:" + "ab" * 32
RUN = RunView(id="r1", project="keepwork", branch="feature/Login", commit="0123456789abcdef",
              trigger="push", source="https://git.example/keepwork.git", source_kind="git",
              images=(ImageView(name="app", repository="reg:5000/kw/app", tags=(),
                                digest=DIGEST, job="image", step="app"),))


def test_images_become_their_pushed_digest_in_every_place_a_job_names_them() -> None:
    images = JobImages(RUN)
    job = images.job(JobSpec(name="t", image="${{ images.app }}", steps=(),
                             env={"IMG": "${{images.app}}"},
                             services=(ServiceSpec(name="db", image="${{ images.app }}"),)))
    ref = f"reg:5000/kw/app@{DIGEST}"
    assert (job.image, job.env["IMG"], job.services[0].image) == (ref, ref, ref)
    step = images.step(StepSpec(name="s", image="x", commands=("run ${{ images.app }}",),
                                deploy=DeploySpec(docker=DockerTarget("c", "${{ images.app }}"))))
    assert step.commands == (f"run {ref}",)
    assert step.deploy is not None and step.deploy.target.image == ref


def test_an_image_pushed_by_an_earlier_step_of_the_job_is_used_by_the_next() -> None:
    images = JobImages(RUN)
    step = StepSpec(name="p", image="", promote=PromoteSpec("${{ images.prod }}", ("r/x:1",)))
    with pytest.raises(DeliveryError, match="image 'prod' was not pushed"):
        images.step(step)
    images.add(PushedImage("prod", "reg:5000/kw/prod", ("reg:5000/kw/prod:1",), DIGEST))
    assert images.step(step).promote == PromoteSpec(f"reg:5000/kw/prod@{DIGEST}", ("r/x:1",))


def test_tags_get_the_runs_values_made_fit_for_a_tag_and_builds_their_oci_labels() -> None:
    step = StepSpec(name="b", image="", build=BuildSpec(
        tags=("Reg:5000/KW/app:${CYCLONE_BRANCH}-${CYCLONE_SHORT_SHA}", "reg:5000/kw/app"),
        args={"V": "${CYCLONE_COMMIT}"}, labels={"team": "web"}))
    build = expand_tags(step, RUN).build
    assert build is not None
    assert build.tags == ("reg:5000/kw/app:feature-Login-01234567", "reg:5000/kw/app:latest")
    assert build.args == {"V": "0123456789abcdef"}
    assert build.labels == {OCI_REVISION: "0123456789abcdef",
                            OCI_SOURCE: "https://git.example/keepwork.git", "team": "web"}


def test_a_tag_left_empty_by_its_variable_fails_the_step_saying_which() -> None:
    step = StepSpec(name="b", image="", build=BuildSpec(tags=("reg/app:${CYCLONE_TAG}",)))
    with pytest.raises(DeliveryError, match="CYCLONE_TAG"):
        expand_tags(step, RUN)
    tagged = RunView(id="r2", trigger="tag", branch="v1.2.0", commit="c")
    build = expand_tags(step, tagged).build
    assert build is not None and build.tags == ("reg/app:v1.2.0",)


def test_registry_logins_and_deploy_secrets_come_from_the_jobs_secrets_only() -> None:
    plan = Plan("f", (), registries=(RegistryLogin("reg:5000", "ci", "REG_PW"),
                                     RegistryLogin("other:5000", "ci", "MISSING")))
    secrets = JobSecrets({"REG_PW": "s3cret", "KUBE_TOKEN": "t", "KUBE_SERVER": "https://k"})
    assert registries_for(plan, secrets) == {"reg:5000": RegistryAuth("ci", "s3cret")}
    assert registries_for(plan, JobSecrets(secrets.values, withheld="a fork")) == {}
    kube = KubernetesTarget(deployment="d", image="i")
    assert deploy_secrets(kube, secrets) == {"KUBE_TOKEN": "t", "KUBE_SERVER": "https://k"}
    assert deploy_secrets(DockerTarget("c", "i"), secrets) == {}
    assert "s3cret" not in repr(RegistryAuth("ci", "s3cret"))
