# One image for every stage of the exchange: `cx run risk|matching|settlement|api`, `cx init`.
# docker-compose.yml wires it to Kafka and PostgreSQL.
# The page's libraries come from npm at build time (the same lockfile and copies as `make web`).
FROM node:20-slim AS web
WORKDIR /build
COPY Makefile ./
COPY web/package.json web/package-lock.json web/
RUN apt-get update && apt-get install -y --no-install-recommends make && make web

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY . /app
COPY --from=web /build/api/web/vendor /app/api/web/vendor
RUN pip install "/app[sim]" \
    && useradd --create-home --uid 10001 exchange

USER exchange
WORKDIR /home/exchange
EXPOSE 8000
ENTRYPOINT ["cx"]
CMD ["--help"]
