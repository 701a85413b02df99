# ATB: one image per service, all from this file (docker-compose.yml builds each with its SERVICE):
#
#   docker build --build-arg SERVICE=approvals -t atb/approvals .
#
# SERVICE is one of gateway, approvals, issuer, broker, audit-sink, chat. The image runs
# `faststream run <service>.main:app` as uid ATB_UID (default 10001) and keeps its state in
# /var/lib/atb (mount a volume there). tests/e2e/test_compose_equivalence.py reads this file:
# what it COPYs, its ENV lines and each service's CMD.

ARG SERVICE=gateway

# --- build: one wheel of the project, from only the sources this service needs ---
FROM python:3.11-slim AS build
ARG SERVICE
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY pyproject.toml ./
# contracts/, the shared runtime and identity, this service, and atb/: pyproject declares the
# `atb` command, and the compose `topics` job runs atb.dev.topics from the broker image.
COPY contracts/ contracts/
COPY atb/ atb/
COPY services/runtime/ services/runtime/
COPY services/identity/ services/identity/
COPY services/${SERVICE}/ services/${SERVICE}/
# The console's compliance view reads the audit store and archive with the audit sink's code.
COPY services/audit-sink/ services/audit-sink/
RUN pip wheel --no-deps --wheel-dir /wheels .

# --- run: the pinned lock first (its own cached layer), then the project without deps ---
FROM python:3.11-slim AS runtime
ARG ATB_UID=10001
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    ATB_STATE_DIR=/var/lib/atb
RUN groupadd --system --gid "${ATB_UID}" atb \
 && useradd --system --uid "${ATB_UID}" --gid atb --home-dir /var/lib/atb --no-create-home \
        --shell /usr/sbin/nologin atb \
 && install -d -o atb -g atb -m 0700 /var/lib/atb
COPY requirements.lock /tmp/requirements.lock
RUN pip install -r /tmp/requirements.lock && rm /tmp/requirements.lock
COPY --from=build /wheels/ /tmp/wheels/
RUN pip install --no-deps /tmp/wheels/*.whl && rm -rf /tmp/wheels
# A new named volume takes this directory's owner, so the service writes to it without root.
USER atb
WORKDIR /var/lib/atb

# --- one final stage per service: what it runs, and the files outside its package it reads ---
# (alembic scripts: the checkout's migrations/ is not inside the installed package)

FROM runtime AS svc-gateway
CMD ["faststream", "run", "gateway.main:app"]

FROM runtime AS svc-approvals
CMD ["faststream", "run", "approvals.main:app"]

FROM runtime AS svc-issuer
CMD ["faststream", "run", "issuer.main:app"]

FROM runtime AS svc-broker
COPY migrations/spent/ /opt/atb/migrations/spent/
ENV ATB_SPENT_MIGRATIONS_DIR=/opt/atb/migrations/spent
CMD ["faststream", "run", "broker.main:app"]

FROM runtime AS svc-audit-sink
COPY migrations/env.py migrations/script.py.mako /opt/atb/migrations/
COPY migrations/versions/ /opt/atb/migrations/versions/
ENV ATB_AUDIT_MIGRATIONS_DIR=/opt/atb/migrations
CMD ["faststream", "run", "audit_sink.main:app"]

FROM runtime AS svc-chat
COPY migrations/chat/ /opt/atb/migrations/chat/
ENV ATB_CHAT_MIGRATIONS_DIR=/opt/atb/migrations/chat
CMD ["faststream", "run", "chat.main:app"]

FROM runtime AS svc-console
COPY migrations/console/ /opt/atb/migrations/console/
ENV ATB_CONSOLE_MIGRATIONS_DIR=/opt/atb/migrations/console
CMD ["faststream", "run", "console.main:app"]

# The image: the stage of the service asked for.
FROM svc-${SERVICE}
