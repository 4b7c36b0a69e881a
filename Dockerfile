# cargohold as a drop-in for the registry:2 image: same port, same config path, same data path.
#
#   docker build -t cargohold .
#   docker run -p 5000:5000 -v registry-data:/var/lib/registry cargohold
#
# REGISTRY_* environment variables override the config exactly as they do for registry:2;
# deploy/compose.yaml and deploy/k8s/ run several replicas on S3 + Redis behind a balancer.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
COPY --from=build /install /usr/local
COPY deploy/config.yml /etc/docker/registry/config.yml
RUN useradd --system --uid 10001 --home-dir /var/lib/registry registry \
    && mkdir -p /var/lib/registry \
    && chown registry /var/lib/registry
USER 10001
EXPOSE 5000
VOLUME ["/var/lib/registry"]
# 200 while the storage answers, 503 otherwise (the same probe a load balancer uses).
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:5000/debug/health', timeout=4).status != 200)"]
ENTRYPOINT ["cargohold", "serve"]
CMD ["/etc/docker/registry/config.yml"]
