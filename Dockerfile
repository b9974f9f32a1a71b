# mana-sync: the same permission flags as `deno task start`, as a non-root user.
FROM denoland/deno:2.9.6

WORKDIR /app
COPY deno.json deno.lock ./
COPY main.ts ./
COPY src/ src/
COPY migrations/ migrations/
# Fetch and cache the locked dependencies at build time (node_modules/ inside the image).
RUN deno install --frozen --entrypoint main.ts \
  && mkdir -p .data \
  && chown -R deno:deno /app/.data

USER deno
ENV PORT=3050
EXPOSE 3050
# Keep in step with the `start` task in deno.json (tests/e2e read the flags from there).
CMD ["run", "--cached-only", "--allow-net", "--allow-env=PORT,HOST,DATABASE_URL,DATABASE_POOL_MAX,DATABASE_TIMEOUT_SECONDS,DATA_DIR,JWKS_URL,JWT_ISSUER,JWT_AUDIENCE,CORS_ORIGINS,MANA_CREDITS_URL,MANA_SERVICE_KEY,BILLING_EXEMPT_APPS,MAX_BODY_BYTES,MAX_CHANGES_PER_PUSH,PUSH_PAGE_SIZE,PULL_PAGE_SIZE,MAX_CLOCK_SKEW_SECONDS,MAX_IMPORT_BYTES,WS_AUTH_TIMEOUT_SECONDS,WS_MAX_BUFFERED_BYTES,SSE_HEARTBEAT_SECONDS,RATE_LIMIT_PUSH_PER_MINUTE,RATE_LIMIT_PULL_PER_MINUTE,RATE_LIMIT_STREAM_PER_MINUTE,RATE_LIMIT_WS_PER_MINUTE,SHUTDOWN_TIMEOUT_SECONDS,LOG_LEVEL,PG*,USER,USERNAME,LOGNAME", "--allow-read=./migrations,./.data,./node_modules", "--allow-write=./.data", "main.ts"]
