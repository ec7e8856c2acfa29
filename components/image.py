"""LsdbImage: the pinned LSDB image, built from docker/ and the one lock. Its tag is derived from what goes into it
(the lock; the Dockerfile, pinning its base by digest), never `latest`; the cluster runs the digest, not the tag."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from typing import Any, cast

import pulumi
import pulumi_docker as docker
import pulumi_kubernetes as k8s

from components.config import ImageConfig
from components.constants import LABELS
from components.lock import PROJECT_DIR, base_image
from components.options import child_options

DOCKER_DIR = PROJECT_DIR / "docker"
CLUSTER_TARGET = "lsdb"  # docker/Dockerfile's stages: the cluster's image, and the notebook's FROM it
NOTEBOOK_TARGET = "notebook"
# What decides each target besides the Dockerfile: the cluster's lock; the notebook adds JupyterLab's pins and the
# starter notebook, neither of which is part of the cluster's identity.
IMAGE_FILES = ("requirements.lock",)
NOTEBOOK_FILES = (*IMAGE_FILES, "notebook-requirements.lock", "notebook/starter.ipynb")
NOTEBOOK_FROM = re.compile(rf"^FROM \S+ AS {NOTEBOOK_TARGET}$", re.MULTILINE)


def image_tag(platform: str = "linux/amd64", notebook: bool = False) -> str:
    """Changes exactly when the lock, the Dockerfile (the cluster's: its `lsdb` stage only) or the platform (an
    arm64 build never overwrites the amd64 tag) does. `notebook`: the notebook target's, of `NOTEBOOK_FILES` and the
    whole Dockerfile too."""
    dockerfile, files = (DOCKER_DIR / "Dockerfile").read_text(), NOTEBOOK_FILES if notebook else IMAGE_FILES
    if not notebook and (notebook_from := NOTEBOOK_FROM.search(dockerfile)):
        # All up to the notebook target's FROM builds the cluster's image (a later stage cannot change an earlier
        # one), so editing the notebook's stage never starts a new cluster.
        dockerfile = dockerfile[: notebook_from.start()]
    digest = hashlib.sha256()
    for name, content in [*((n, (DOCKER_DIR / n).read_bytes()) for n in files), ("Dockerfile", dockerfile.encode())]:
        digest.update(f"{name}\0{hashlib.sha256(content).hexdigest()}\0".encode())
    digest.update(f"platform\0{platform}".encode())
    python = base_image(DOCKER_DIR / "Dockerfile").python_version
    return f"{'notebook-' if notebook else ''}py{python}-lock-{digest.hexdigest()[:12]}"


def pull_secret_name(cluster_name: str) -> str:
    return f"{cluster_name}-registry"


class LsdbImage(pulumi.ComponentResource):
    """Builds and pushes the image (or adopts a prebuilt `image.ref`), plus the pull Secret for private registries.
    `notebook`: also build the `notebook` target (notebook.enabled without notebook.imageRef)."""

    ref: pulumi.Output[str]
    identity: str  # known at evaluation: `image.ref`, or repository:<content tag> (the cluster's names derive from it)
    notebook_ref: pulumi.Output[str] | None = None  # the notebook target's digest reference, when built here
    pull_secret_name: str | None = None

    def __init__(
        self,
        name: str,
        image: ImageConfig,
        namespace: str,
        cluster_name: str,
        registry_password: pulumi.Output[str] | None = None,  # a Pulumi secret
        notebook: bool = False,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("lsdb-k8s:image:LsdbImage", name, {}, opts)
        if image.ref is not None:
            self.ref = pulumi.Output.from_input(image.ref)
            self.identity = image.ref
        else:
            registry = None
            if registry_password is not None:
                registry = docker.RegistryArgs(
                    server=image.registry.server, username=image.registry.username, password=registry_password
                )
            self.identity = f"{image.repository}:{image_tag(image.platform)}"

            def build(suffix: str, image_name: str, target: str) -> pulumi.Output[str]:
                return docker.Image(
                    f"{name}{suffix}",
                    image_name=image_name,
                    build=docker.DockerBuildArgs(
                        context=str(DOCKER_DIR),
                        dockerfile=str(DOCKER_DIR / "Dockerfile"),
                        platform=image.platform,  # no build args: the Dockerfile alone decides the image
                        target=target,
                    ),
                    registry=registry,
                    skip_push=not image.push,
                    opts=pulumi.ResourceOptions(parent=self),
                ).repo_digest

            self.ref = build("-build", self.identity, CLUSTER_TARGET)
            if notebook:
                self.notebook_ref = build(
                    "-notebook-build", f"{image.repository}:{image_tag(image.platform, True)}", NOTEBOOK_TARGET
                )
        if registry_password is not None:
            # The Secret lives in the cluster namespace: it waits for it (depends_on).
            self.pull_secret_name = pull_secret_name(cluster_name)
            server, user = image.registry.server or "", image.registry.username or ""

            def dockerconfigjson(password: str) -> str:  # the `.dockerconfigjson` kubelet reads for imagePullSecrets
                auth = base64.b64encode(f"{user}:{password}".encode()).decode()
                return json.dumps({"auths": {server: {"username": user, "password": password, "auth": auth}}})

            payload = registry_password.apply(dockerconfigjson)
            k8s.core.v1.Secret(
                f"{name}-pull-secret",
                metadata={"name": self.pull_secret_name, "namespace": namespace, "labels": LABELS},
                type="kubernetes.io/dockerconfigjson",
                string_data={".dockerconfigjson": pulumi.Output.secret(cast(Any, payload))},
                opts=child_options(self, opts),
            )
        self.register_outputs({"ref": self.ref})
