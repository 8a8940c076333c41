# A slim image that runs the bot as a non-root user; the data folder (SQLite, local artifacts) is a volume.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY jobs ./jobs
COPY storage ./storage
# With PostgreSQL's driver (psycopg 3, its own libpq inside): DATABASE_URL may point at a server.
RUN pip install --no-cache-dir --prefix=/install '.[postgres]'

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 lorabot && mkdir /data && chown lorabot /data
COPY --from=build /install /usr/local
USER lorabot
WORKDIR /home/lorabot
ENV LORABOT_DATA_DIR=/data \
    LORABOT_HTTP_HOST=0.0.0.0 \
    PYTHONUNBUFFERED=1
VOLUME ["/data"]
EXPOSE 8750
ENTRYPOINT ["lorabot"]
CMD ["run"]
