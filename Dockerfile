# One image for the three Dagster services of docker-compose.yml (code server, webserver,
# daemon): Python 3.11, a Java 17 runtime for Spark, fraud_assets and its Maven jars.
# Bookworm, because its Java is 17 (the version the project is tested on).
FROM python:3.11.14-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FRAUD_HOME=/opt/fraud_assets \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    SPARK_LOCAL_IP=127.0.0.1 \
    PYSPARK_PYTHON=/usr/local/bin/python

# procps: Spark's launch scripts call `ps`.
RUN apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless procps \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/fraud_assets

# Dependencies first, so that code edits do not reinstall them: the exact versions the
# tests ran with (constraints.txt pins every transitive package). dagster-postgres (same
# release family as dagster 1.13.27) and its driver back docker/dagster.yaml's storage.
COPY pyproject.toml constraints.txt README.md ./
COPY fraud_assets ./fraud_assets
COPY jvm ./jvm
RUN pip install -c constraints.txt -e . dagster-postgres==0.29.27 psycopg2-binary==2.9.13

# The connector and broker jars are resolved once, at build time; Maven and its cache
# leave the image afterwards. The dataset is fetched at first start (docker-compose.yml).
RUN apt-get update \
    && apt-get install -y --no-install-recommends maven \
    && fraud-assets --home /opt/fraud_assets setup --skip-data \
    && apt-get purge -y --auto-remove maven \
    && rm -rf /root/.m2 /var/lib/apt/lists/* /opt/fraud_assets/var/tmp

COPY dagster.yaml workspace.yaml ./
COPY docker/dagster.yaml /opt/dagster/dagster_home/dagster.yaml
COPY docker/workspace-docker.yaml /opt/dagster/workspace-docker.yaml

# An unprivileged user owns what the services write (named volumes copy this ownership).
RUN useradd --create-home --uid 1000 fraud \
    && mkdir -p data var/models var/tables var/checkpoints /opt/dagster/dagster_home/storage \
    && chown -R fraud:fraud data var /opt/dagster/dagster_home
USER fraud

EXPOSE 3000 4000
CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", "-m", "fraud_assets.definitions"]
