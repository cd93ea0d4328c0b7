# x86-64 CPU image of climbq_deploy; the demo issue extends it to run every CPU target.
# Build: docker build -t climbq .    Run: docker run --rm -v "$PWD/out:/work" climbq
# A CPU-only torch wheel index can be given with --build-arg PIP_EXTRA_INDEX_URL=<index>.
FROM python:3.11-slim-bookworm

ARG PIP_EXTRA_INDEX_URL=""
ENV PIP_EXTRA_INDEX_URL=${PIP_EXTRA_INDEX_URL} \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/climbq
COPY pyproject.toml README.md ./
COPY climbq_deploy ./climbq_deploy
COPY calibration ./calibration
COPY kernels ./kernels
COPY targets ./targets
# Versions are pinned in pyproject.toml (torch==2.13.0); "." is this package.
# hadolint ignore=DL3013
RUN pip install ".[tflite,onnx]"

WORKDIR /work
ENTRYPOINT ["climbq"]
CMD ["data", "syndigits", "--gamma", "50", "--out", "/work/syndigits-lt-g50", "--preview"]
