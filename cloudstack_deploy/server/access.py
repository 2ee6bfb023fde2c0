"""Who may do what: API tokens with a role and an optional environment prefix, browser
sessions, and the audit log. Everything is in the history store.

A token's text (``csd_`` + 43 URL-safe characters, 32 random bytes) is shown once; the store
keeps its sha256. A presented token is hashed and looked up, and the stored hash compared again
in constant time. Roles: ``viewer`` reads; ``deployer`` also deploys, rolls back and cancels in
environments whose name starts with its prefix; ``admin`` also creates and tears down
environments and manages tokens.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ..errors import InvalidInput
from ..store.db import Store
from ..store.records import actor, now_text, parse_time

ROLES = ("viewer", "deployer", "admin")
RANK = {role: n for n, role in enumerate(ROLES)}
SESSION_LIFETIME = timedelta(hours=12)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    """The caller of one request."""

    token_id: str
    name: str
    role: str
    env_prefix: str | None

    def at_least(self, role: str) -> bool:
        return RANK[self.role] >= RANK[role]

    def may_change(self, env: str) -> bool:
        """Deploy, roll back or cancel in ``env``: a deployer within its prefix, an admin anywhere."""
        if self.role == "admin":
            return self.env_prefix is None or env.startswith(self.env_prefix)
        return self.role == "deployer" and (self.env_prefix is None or env.startswith(self.env_prefix))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role, "env_prefix": self.env_prefix}


@dataclass
class TokenRow:
    id: str
    name: str
    role: str
    env_prefix: str | None
    created_at: str
    created_by: str
    revoked_at: str | None
    last_used_at: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def create_token(store: Store, *, name: str, role: str, env_prefix: str | None = None,
                 by: str | None = None) -> tuple[TokenRow, str]:
    """A new token: its row and its text (shown once, never stored)."""
    if not _NAME.match(name):
        raise InvalidInput(f"token name {name!r}: use 1-64 letters, digits, '_', '.', '@' or '-'",
                           hint="e.g. --name alice")
    if role not in ROLES:
        raise InvalidInput(f"role {role!r}: must be one of {', '.join(ROLES)}")
    if env_prefix is not None and not re.fullmatch(r"[a-z0-9-]{1,40}", env_prefix):
        raise InvalidInput(f"env prefix {env_prefix!r}: lower-case letters, digits and '-'")
    if store.query("SELECT id FROM api_tokens WHERE name = :name AND revoked_at IS NULL", {"name": name}):
        raise InvalidInput(f"a token named {name!r} exists", hint="revoke it first, or pick another name")
    text = "csd_" + secrets.token_urlsafe(32)
    row = TokenRow(id=str(uuid.uuid4()), name=name, role=role, env_prefix=env_prefix, created_at=now_text(),
                   created_by=by or actor(), revoked_at=None, last_used_at=None)
    with store.transaction() as execute:
        execute("INSERT INTO api_tokens (id, name, role, env_prefix, token_hash, created_at, created_by) "
                "VALUES (:id, :name, :role, :env_prefix, :hash, :created_at, :created_by)",
                {**row.to_dict(), "hash": digest(text)})
    return row, text


def list_tokens(store: Store, *, include_revoked: bool = False) -> list[TokenRow]:
    where = "" if include_revoked else " WHERE revoked_at IS NULL"
    rows = store.query("SELECT id, name, role, env_prefix, created_at, created_by, revoked_at, last_used_at "
                       f"FROM api_tokens{where} ORDER BY created_at")
    return [TokenRow(**r) for r in rows]


def revoke_token(store: Store, name: str) -> bool:
    """Revoke the live token ``name`` (and end its browser sessions); False if there is none."""
    found = store.query("SELECT id FROM api_tokens WHERE name = :name AND revoked_at IS NULL", {"name": name})
    if not found:
        return False
    with store.transaction() as execute:
        execute("UPDATE api_tokens SET revoked_at = :at WHERE id = :id", {"at": now_text(), "id": found[0]["id"]})
        execute("DELETE FROM web_sessions WHERE token_id = :id", {"id": found[0]["id"]})
    return True


def authenticate(store: Store, text: str) -> Principal | None:
    """The live token whose text is ``text``, or None."""
    if not text or len(text) > 200:
        return None
    wanted = digest(text)
    rows = store.query("SELECT id, name, role, env_prefix, token_hash FROM api_tokens "
                       "WHERE token_hash = :hash AND revoked_at IS NULL", {"hash": wanted})
    if not rows or not hmac.compare_digest(rows[0]["token_hash"], wanted):
        return None
    r = rows[0]
    return Principal(token_id=r["id"], name=r["name"], role=r["role"], env_prefix=r["env_prefix"])


# ---- browser sessions ------------------------------------------------------------------------
def start_session(store: Store, principal: Principal) -> tuple[str, str]:
    """A session for ``principal``: (cookie value, CSRF token)."""
    session, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    now = datetime.now(UTC)
    with store.transaction() as execute:
        execute("DELETE FROM web_sessions WHERE expires_at < :now", {"now": now_text(now)})
        execute("INSERT INTO web_sessions (id_hash, token_id, csrf, created_at, expires_at) "
                "VALUES (:id, :token, :csrf, :at, :expires)",
                {"id": digest(session), "token": principal.token_id, "csrf": csrf, "at": now_text(now),
                 "expires": now_text(now + SESSION_LIFETIME)})
    return session, csrf


def session_principal(store: Store, session: str) -> tuple[Principal, str] | None:
    """The principal and CSRF token of a live session (its token not revoked), or None."""
    if not session or len(session) > 200:
        return None
    rows = store.query("SELECT t.id, t.name, t.role, t.env_prefix, s.csrf, s.expires_at FROM web_sessions s "
                       "JOIN api_tokens t ON t.id = s.token_id WHERE s.id_hash = :id AND t.revoked_at IS NULL",
                       {"id": digest(session)})
    if not rows or parse_time(rows[0]["expires_at"]) < datetime.now(UTC):
        return None
    r = rows[0]
    return Principal(token_id=r["id"], name=r["name"], role=r["role"], env_prefix=r["env_prefix"]), r["csrf"]


def end_session(store: Store, session: str) -> None:
    with store.transaction() as execute:
        execute("DELETE FROM web_sessions WHERE id_hash = :id", {"id": digest(session)})


# ---- audit -------------------------------------------------------------------------------------
def audit(store: Store, *, actor_name: str, role: str | None, action: str, target: str | None, outcome: str,
          detail: dict[str, Any] | None = None) -> None:
    with store.transaction() as execute:
        execute("INSERT INTO audit_log (id, at, actor, role, action, target, outcome, detail) "
                "VALUES (:id, :at, :actor, :role, :action, :target, :outcome, :detail)",
                {"id": str(uuid.uuid4()), "at": now_text(), "actor": actor_name, "role": role, "action": action,
                 "target": target, "outcome": outcome, "detail": json.dumps(detail or {}, sort_keys=True)})


def audit_entries(store: Store, *, limit: int = 100, actor_name: str | None = None,
                  action: str | None = None) -> list[dict[str, Any]]:
    clauses, params = [], {"limit": limit}
    if actor_name:
        clauses.append("actor = :actor")
        params["actor"] = actor_name
    if action:
        clauses.append("action = :action")
        params["action"] = action
    where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
    rows = store.query(f"SELECT at, actor, role, action, target, outcome, detail FROM audit_log{where} "
                       "ORDER BY at DESC LIMIT :limit", params)
    for r in rows:
        r["detail"] = json.loads(r["detail"] or "{}")
    return rows
