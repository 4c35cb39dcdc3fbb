"""Deployer adapters (``shared.ports.deployer``): a container on a Docker host
(``docker_host``) and a Kubernetes Deployment (``kubernetes``)."""
