# One image for every stage of the exchange: `cx run risk|matching|settlement|api`, `cx init`.
# docker-compose.yml wires it to Kafka and PostgreSQL.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY . /app
RUN pip install "/app[sim]" \
    && useradd --create-home --uid 10001 exchange

USER exchange
WORKDIR /home/exchange
EXPOSE 8000
ENTRYPOINT ["cx"]
CMD ["--help"]
