# x86-64 CPU image of climbq_deploy. The demo issue extends this to run every CPU target.
FROM python:3.11-slim-bookworm

WORKDIR /opt/climbq
COPY pyproject.toml README.md ./
COPY climbq_deploy ./climbq_deploy
COPY calibration ./calibration
COPY kernels ./kernels
COPY targets ./targets
RUN pip install --no-cache-dir --extra-index-url https://download.pytorch.org/whl/cpu ".[tflite,onnx]"

WORKDIR /work
ENTRYPOINT ["climbq"]
CMD ["data", "syndigits", "--gamma", "50", "--out", "/work/syndigits-lt-g50", "--preview"]
