# Triton Inference Server on `edgesplit export --format triton`'s model repository, mounted at /models. No edgesplit
# and no numpy 2 in this image: its own virtualenv holds the nvidia-pytriton wheel (a real Triton 2.51 binary with
# the python backend; --no-deps: nothing of PyTriton's Python is used), numpy<2 for the python-backend stub and the
# onnxruntime wheel, pinned by constraints-triton.txt; cloud/triton_backend/onnxruntime/model.py stands in for the
# C++ onnxruntime backend (see its docstring). NVIDIA's own container (nvcr.io/nvidia/tritonserver) serves the same
# repository with the real backend and needs none of this. Build from the repository root:
#   docker build -f docker/triton.Dockerfile -t edgesplit-triton .
#   docker build -f docker/triton.Dockerfile --build-arg BASE_IMAGE=edgesplit-base:bookworm -t edgesplit-triton .
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
WORKDIR /src
COPY constraints-triton.txt ./
RUN python3 -m venv /opt/triton \
 && /opt/triton/bin/pip install --no-cache-dir --disable-pip-version-check -c constraints-triton.txt numpy onnxruntime \
 && /opt/triton/bin/pip install --no-cache-dir --disable-pip-version-check -c constraints-triton.txt --no-deps \
      nvidia-pytriton
COPY cloud/triton_backend/onnxruntime/model.py ./model.py
COPY docker/triton.py ./triton.py
RUN /opt/triton/bin/python triton.py layout --backend model.py

FROM ${BASE_IMAGE}
# The python-backend stub links libpython3.11.so (python:3.11-slim has it; Debian's python3 needs the package).
RUN python3 -c "import sysconfig, pathlib, sys; d = sysconfig.get_config_var('LIBDIR');\
 sys.exit(not any(pathlib.Path(d).glob('libpython3.11.so*')))" \
 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      libpython3.11 >/dev/null && rm -rf /var/lib/apt/lists/*; }
RUN useradd --system --uid 10001 --user-group --create-home --shell /usr/sbin/nologin edgesplit
COPY --from=build /opt/triton /opt/triton
COPY docker/healthcheck.py docker/triton.py /app/
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER edgesplit
WORKDIR /app
# KServe v2 gRPC :8001 (as edgesplit cloud), HTTP :8000, Prometheus metrics :8002.
EXPOSE 8000 8001 8002
# Triton's HTTP readiness: every model in the repository loaded (--strict-readiness).
HEALTHCHECK --interval=5s --timeout=3s --start-period=60s --retries=3 \
  CMD ["/opt/triton/bin/python", "/app/healthcheck.py", "--http", "http://127.0.0.1:8000/v2/health/ready"]
ENTRYPOINT ["/opt/triton/bin/python", "/app/triton.py", "serve"]
