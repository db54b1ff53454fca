# syntax=docker/dockerfile:1
# Salon: the spaces server and the standalone SFU node in one small image (README "Deployment").
#   docker build -t salon .
#   docker run --rm salon serve --help
# Three stages: the web app's bundle (node), a wheel install into a venv (python), and the
# runtime (python slim + the venv; no compiler, no node, no OpenCV: `pip install .` is the
# server; `.[client]` would add the CLI's media).

FROM node:20-bookworm-slim AS web
WORKDIR /src/web
COPY web/package.json web/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY web/ ./
RUN node scripts/build.mjs --outdir /src/web_dist

FROM python:3.11-slim-bookworm AS build
WORKDIR /src
RUN python -m venv /opt/salon
COPY pyproject.toml README.md ./
COPY protocol/ protocol/
COPY spaces/ spaces/
COPY client/ client/
COPY sfu/ sfu/
COPY rtc/ rtc/
COPY --from=web /src/web_dist/ spaces/web_dist/
RUN /opt/salon/bin/pip install --no-cache-dir . \
    && /opt/salon/bin/salon serve --help >/dev/null

FROM python:3.11-slim-bookworm AS runtime
RUN useradd --system --create-home --home-dir /var/lib/salon --shell /usr/sbin/nologin salon
COPY --from=build /opt/salon /opt/salon
COPY configs/default.toml /etc/salon/salon.toml
ENV PATH=/opt/salon/bin:$PATH PYTHONUNBUFFERED=1
USER salon
WORKDIR /var/lib/salon
VOLUME ["/var/lib/salon"]
EXPOSE 8080 8081
# /ready: 200 once migrations are applied and the server listens (503 while they run).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8080/ready', timeout=4)"]
ENTRYPOINT ["salon"]
CMD ["serve", "--config", "/etc/salon/salon.toml", "--host", "0.0.0.0"]
