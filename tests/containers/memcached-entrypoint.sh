#!/bin/sh
# Stand-in for the official memcached image's entrypoint: a command made of flags
# only (["-m", "64"]) is handed to memcached.
set -e
if [ "${1#-}" != "$1" ]; then
    set -- memcached "$@"
fi
exec "$@"
