# edgesplit edge: runs a bundle's head on the device and offloads to the cloud; serves KServe v2 to apps with
# --listen. No torch. The same image runs `edgesplit netsim` and the test-set client (docker/client.py).
# Build from the repository root:
#   docker build -f docker/edge.Dockerfile -t edgesplit-edge .
#   docker build -f docker/edge.Dockerfile --build-arg BASE_IMAGE=edgesplit-base:bookworm -t edgesplit-edge .
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY protos ./protos
COPY edge ./edge
COPY cloud ./cloud
COPY netsim ./netsim
COPY split ./split
# A venv works the same on python:3.11-slim and on a Debian base with python3-venv (no system pip needed).
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check -c constraints.txt . \
 && if /opt/venv/bin/python -c "import torch" 2>/dev/null; then echo "torch must not be in the image" >&2; exit 1; fi

FROM ${BASE_IMAGE}
RUN useradd --system --uid 10001 --user-group --create-home --shell /usr/sbin/nologin edgesplit
COPY --from=build /opt/venv /opt/venv
COPY docker/healthcheck.py docker/launch.py docker/client.py /app/
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER edgesplit
WORKDIR /app
EXPOSE 8000 9100
# KServe v2 ServerReady on the edge's own endpoint (the edge serves no grpc.health.v1).
HEALTHCHECK --interval=5s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "/app/healthcheck.py", "--kserve-ready", "127.0.0.1:8000"]
ENTRYPOINT ["python", "/app/launch.py", "edge"]
