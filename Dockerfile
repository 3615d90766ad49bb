# syntax=docker/dockerfile:1
# deepcovid-node: one image for the DICOM listener (`deepcovid node`), the analysis workers
# (`deepcovid worker`) and the one-shot commands (`deepcovid db upgrade`, `deepcovid models ...`).
#
#   docker build -t deepcovid-node:local .
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu -t deepcovid-node:cpu .
#
# torch and torchvision come from PyPI by default: the Linux wheels there carry their CUDA
# libraries, so the same image runs on the CPU and, with the NVIDIA Container Toolkit, on a GPU.
# TORCH_INDEX_URL installs them from another index first (e.g. a CPU-only build for a smaller
# image); the versions stay the ones pinned in pyproject.toml.
# python:3.11-slim on Debian 12: its glibc 2.36 runs every binary wheel the project needs
# (pylibjpeg-libjpeg's are manylinux_2_34), so no compiler is installed.
FROM python:3.11-slim-bookworm

ARG TORCH_INDEX_URL=""

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# An unprivileged service account; its data folders are created here so that named volumes
# mounted on them start out owned by it (Docker copies an image folder's ownership and content
# into an empty named volume on first use).
RUN groupadd --system --gid 10001 deepcovid \
    && useradd --system --uid 10001 --gid deepcovid --home-dir /var/lib/deepcovid \
       --shell /usr/sbin/nologin deepcovid \
    && install -d -o deepcovid -g deepcovid -m 0700 /var/lib/deepcovid \
       /var/lib/deepcovid/spool /var/lib/deepcovid/results /var/lib/deepcovid/logs \
    && install -d -o deepcovid -g deepcovid -m 0755 /var/lib/deepcovid/models

WORKDIR /opt/deepcovid-node

# Dependencies first, in their own layer, so that a code change does not reinstall torch.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
    > /tmp/requirements.txt
RUN if [ -n "$TORCH_INDEX_URL" ]; then \
        pip install --index-url "$TORCH_INDEX_URL" \
            "$(grep '^torch==' /tmp/requirements.txt)" \
            "$(grep '^torchvision==' /tmp/requirements.txt)"; \
    fi \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# The project itself (the console script is `deepcovid`), and the model registry the repository
# ships (models/registry, with its ACTIVE default model): a pristine copy in
# /opt/deepcovid-node/registry, and a copy at the registry path that seeds the `models` volume
# on first start (docs/deployment.md).
COPY . /tmp/src
RUN pip install --no-deps /tmp/src \
    && if [ -d /tmp/src/models/registry ]; then \
           cp -a /tmp/src/models/registry /opt/deepcovid-node/registry \
           && cp -a /tmp/src/models/registry/. /var/lib/deepcovid/models/ \
           && chown -R deepcovid:deepcovid /var/lib/deepcovid/models; \
       fi \
    && rm -rf /tmp/src \
    && deepcovid --version

# Defaults for a container; docker-compose.yml sets the production ones (PostgreSQL, Redis,
# destination). Every setting is listed in docs/configuration.md.
ENV DEEPCOVID_DATA_DIR=/var/lib/deepcovid \
    DEEPCOVID_MODEL_REGISTRY_DIR=/var/lib/deepcovid/models

USER deepcovid
WORKDIR /var/lib/deepcovid
EXPOSE 11112
CMD ["deepcovid", "serve"]
