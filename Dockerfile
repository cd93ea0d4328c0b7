# x86-64 CPU image of climbq_deploy: the full toolkit, which trains and runs every CPU target
# (NumPy reference, LiteRT, ONNX Runtime for the TensorRT-bound ONNX); the default command is
# the main job, `climbq demo`.
# Build: docker build -t climbq .    Run: docker run --rm -v "$PWD/out:/work" climbq
# A CPU-only torch wheel index can be given with --build-arg PIP_EXTRA_INDEX_URL=<index>.
FROM python:3.11.14-slim-bookworm

ARG PIP_EXTRA_INDEX_URL=""
ENV PIP_EXTRA_INDEX_URL=${PIP_EXTRA_INDEX_URL} \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/climbq
# The package's sources only: .dockerignore lets in nothing else (no .venv, runs, tests).
COPY . ./
# "./" is this package: the training stack and both CPU runtimes. pyproject.toml gives torch
# as a range; the image pins the release the results were made with, as the Makefile does.
RUN pip install "./[train,tflite,onnx]" "torch==2.13.0" && climbq demo --help > /dev/null

WORKDIR /work
ENTRYPOINT ["climbq"]
CMD ["demo", "--out", "/work/demo"]
