#!/usr/bin/env bash
# The official postgres image's entrypoint contract (docker-library/postgres), for
# Debian's postgresql-15:
#  - started as root: fix PGDATA's owner, re-execute as the postgres user (setpriv);
#  - PGDATA empty: initdb with POSTGRES_USER / POSTGRES_PASSWORD, create POSTGRES_DB, run
#    /docker-entrypoint-initdb.d/*, all on a socket-only temporary server;
#  - local (socket) connections trust, remote hosts scram-sha-256 (or
#    POSTGRES_HOST_AUTH_METHOD); listen on all addresses, port 5432;
#  - PGDATA not empty: start as is, whatever the variables say now;
#  - `exec postgres`: it is PID 1 and gets docker's stop signal directly.
set -Eeuo pipefail

# file_env VAR [DEFAULT]: VAR from $VAR or from the file named by $VAR_FILE.
file_env() {
	local var="$1" file_var="${1}_FILE" def="${2:-}" val
	if [ -n "${!var:-}" ] && [ -n "${!file_var:-}" ]; then
		echo >&2 "error: both $var and $file_var are set (but are exclusive)"
		exit 1
	fi
	val="$def"
	if [ -n "${!var:-}" ]; then
		val="${!var}"
	elif [ -n "${!file_var:-}" ]; then
		val="$(< "${!file_var}")"
	fi
	export "$var"="$val"
	unset "$file_var"
}

if [ "${1:0:1}" = '-' ]; then
	set -- postgres "$@"
fi

if [ "$1" = 'postgres' ] && [ "$(id -u)" = '0' ]; then
	mkdir -p "$PGDATA" /var/run/postgresql
	chmod 0700 "$PGDATA" || :
	chown postgres:postgres /var/run/postgresql
	chmod 3777 /var/run/postgresql
	find "$PGDATA" \! -user postgres -exec chown postgres:postgres '{}' +
	exec setpriv --reuid=postgres --regid=postgres --init-groups "$BASH_SOURCE" "$@"
fi

init_database() {
	file_env POSTGRES_PASSWORD
	file_env POSTGRES_USER postgres
	file_env POSTGRES_DB "$POSTGRES_USER"
	file_env POSTGRES_INITDB_ARGS
	local auth="${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}"
	if [ -z "$POSTGRES_PASSWORD" ] && [ "$auth" != 'trust' ]; then
		cat >&2 <<-'EOE'
			error: the database is uninitialized and no superuser password is set.
			       Set POSTGRES_PASSWORD (for example with -e POSTGRES_PASSWORD=...),
			       or POSTGRES_HOST_AUTH_METHOD=trust to allow every connection without one
			       (never outside a throwaway lab).
		EOE
		exit 1
	fi

	echo "initializing a PostgreSQL 15 cluster in $PGDATA"
	# shellcheck disable=SC2086  # POSTGRES_INITDB_ARGS is a list of words on purpose
	if [ -n "$POSTGRES_PASSWORD" ]; then
		initdb --username="$POSTGRES_USER" --encoding=UTF8 --locale=C.UTF-8 \
			--auth-local=trust --auth-host=scram-sha-256 \
			--pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") $POSTGRES_INITDB_ARGS
	else
		initdb --username="$POSTGRES_USER" --encoding=UTF8 --locale=C.UTF-8 \
			--auth-local=trust --auth-host=trust $POSTGRES_INITDB_ARGS
	fi

	printf "\nlisten_addresses = '*'\n" >> "$PGDATA/postgresql.conf"
	printf '\nhost all all all %s\n' "$auth" >> "$PGDATA/pg_hba.conf"

	# A temporary server on the Unix socket only: nobody can connect before init is done.
	pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p 5432" -w start
	local -a psql=(psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --no-psqlrc)
	if [ "$POSTGRES_DB" != 'postgres' ]; then
		"${psql[@]}" --dbname postgres --set db="$POSTGRES_DB" <<-'EOSQL'
			SELECT format('CREATE DATABASE %I', :'db')
			WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db')\gexec
		EOSQL
	fi
	local f
	for f in /docker-entrypoint-initdb.d/*; do
		case "$f" in
			*.sh) echo "running $f"; . "$f" ;;
			*.sql) echo "running $f"; "${psql[@]}" --dbname "$POSTGRES_DB" -f "$f" ;;
			*.sql.gz) echo "running $f"; gunzip -c "$f" | "${psql[@]}" --dbname "$POSTGRES_DB" ;;
			*) [ -e "$f" ] && echo "ignoring $f" ;;
		esac
	done
	pg_ctl -D "$PGDATA" -m fast -w stop
	echo "PostgreSQL init process complete; ready for start up."
}

if [ "$1" = 'postgres' ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
	init_database
fi

exec "$@"
