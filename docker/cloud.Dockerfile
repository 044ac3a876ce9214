# edgesplit cloud: serves a bundle's tails over KServe v2 gRPC. No torch: the project is installed without the
# `split` extra. Build from the repository root:
#   docker build -f docker/cloud.Dockerfile -t edgesplit-cloud .
#   docker build -f docker/cloud.Dockerfile --build-arg BASE_IMAGE=edgesplit-base:bookworm -t edgesplit-cloud .
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
COPY docker/healthcheck.py /app/healthcheck.py
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER edgesplit
WORKDIR /app
EXPOSE 8001 9101
# grpc.health.v1.Health/Check for the server as a whole (service "").
HEALTHCHECK --interval=5s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "/app/healthcheck.py", "--grpc-health", "127.0.0.1:8001"]
ENTRYPOINT ["edgesplit", "cloud"]
CMD ["--bundle", "/bundle", "--host", "0.0.0.0", "--port", "8001", "--metrics", "0.0.0.0:9101"]
