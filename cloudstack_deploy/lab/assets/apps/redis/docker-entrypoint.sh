#!/usr/bin/env bash
# The official redis image's entrypoint contract, for Debian's redis-server:
#  - `docker run IMAGE --opt x` and `docker run IMAGE my.conf` run redis-server with them;
#  - redis-server gets the lab defaults first (bind 0.0.0.0, protected-mode no,
#    appendonly yes, dir /data), so any option the user passes still overrides them;
#  - started as root, it fixes /data's owner and re-executes itself as the redis user;
#  - `exec` everywhere: redis-server is PID 1 and receives SIGTERM (it saves and exits).
set -Eeuo pipefail

if [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then
	set -- redis-server "$@"
fi

if [ "$1" = 'redis-server' ] && [ "$(id -u)" = '0' ]; then
	find /data \! -user redis -exec chown redis '{}' +
	exec setpriv --reuid=redis --regid=redis --init-groups "$BASH_SOURCE" "$@"
fi

if [ "$1" = 'redis-server' ]; then
	shift
	conf=()
	if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then  # a config file must come first
		conf=("$1")
		shift
	fi
	set -- redis-server "${conf[@]}" --bind 0.0.0.0 --protected-mode no \
		--appendonly yes --dir /data "$@"
fi

exec "$@"
