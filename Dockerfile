# One image for both roles of sessionha: the app server (default command) and the
# proxy (`python -m proxy`). Build arguments:
#   PYTHON_IMAGE  the Python base image (any Debian-like image with python3 and venv)
#   WHEELHOUSE    empty: install from the package index as usual; otherwise a
#                 directory inside the build context holding wheels of the project
#                 and every dependency, installed with --no-index (air-gapped builds)
ARG PYTHON_IMAGE=python:3.12-slim

FROM ${PYTHON_IMAGE} AS build
LABEL org.opencontainers.image.title=sessionha
ARG WHEELHOUSE=
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
RUN python -m venv /opt/sessionha
COPY . /src
# With a wheelhouse, the project's own wheel comes from it too: no build backend needed.
RUN if [ -n "$WHEELHOUSE" ]; then \
        /opt/sessionha/bin/pip install --no-index --find-links "/src/$WHEELHOUSE" sessionha; \
    else \
        /opt/sessionha/bin/pip install /src; \
    fi

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title=sessionha \
      org.opencontainers.image.licenses=Apache-2.0
# A fixed uid so volumes and security policies can name it.
RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin sessionha
# No set-user-ID or set-group-ID program (su, passwd, mount, ...): nothing in the container
# can gain privileges, even where no-new-privileges cannot be set (docker stack deploy).
RUN find / -xdev -perm /6000 -type f -exec chmod a-s {} +
COPY --from=build /opt/sessionha /opt/sessionha
ENV PATH=/opt/sessionha/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LISTEN=0.0.0.0:8000
USER 10001:10001
EXPOSE 8000
# Python's standard library only: slim images have no curl or wget. The port follows LISTEN.
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:' + os.environ['LISTEN'].rsplit(':', 1)[1] + '/health', timeout=2)"]
CMD ["python", "-m", "appserver"]
