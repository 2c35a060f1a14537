"""Checks that run before any training and before anything is written: stores reachable, paths writable.

Every failure is a one-line ``ConfigError`` with credentials masked.
"""

from __future__ import annotations

import base64
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from litesweep.objectives.errors import ConfigError

_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<secret>[^@\s]*)@", re.IGNORECASE)
_QUERY_SECRET = re.compile(r"(?P<key>[?&](?:password|passwd|pwd|token|secret)=)(?P<secret>[^&\s'\"]*)", re.IGNORECASE)


def mask(text: str) -> str:
    """Hide the password of every ``scheme://user:password@host`` and ``?password=...`` in ``text``."""
    text = _CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    return _QUERY_SECRET.sub(lambda m: f"{m['key']}***", text)


def _writable(path: Path, what: str) -> None:
    path = path.resolve()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"{what} = '{path}' cannot be created: '{existing}' is a file; accepted: a directory this user can write")
    if not os.access(existing, os.W_OK):
        raise ConfigError(f"{what} = '{path}' is not writable ('{existing}'); accepted: a directory this user can write")


def check_output_dir(path: str) -> None:
    """``paths.output_dir`` must be a directory (or creatable under one) this user can write."""
    _writable(Path(path), "paths.output_dir")


def check_tracking(uri: str) -> None:
    """The MLflow store answers: a local SQLite file's folder is writable, a server answers ``/health``."""
    if uri.startswith("sqlite:///"):
        _writable(Path(uri[len("sqlite:///"):]).parent, "tracking.uri folder")
        return
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(_health_request(uri), timeout=5) as response:
                if response.status == 200:
                    return
                reason = f"HTTP {response.status}"
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = str(getattr(exc, "reason", exc))
        raise ConfigError(f"tracking.uri = '{mask(uri)}' cannot be reached ({reason}); accepted: the URL of a running tracking server "
                          "(mlflow server --host 127.0.0.1 --port 5000), sqlite:///path/mlflow.db, or a database URI that answers")
    if uri.startswith("file:") or "://" not in uri:
        raise ConfigError(f"tracking.uri = '{mask(uri)}' is a file store, which MLflow 3 keeps in maintenance mode; "
                          "accepted: sqlite:///..., http(s)://..., or a database URI")
    _check_database(uri, "tracking.uri")


def _health_request(uri: str) -> urllib.request.Request:
    """``GET <uri>/health``; credentials in the URI go into a basic-auth header (urllib takes none in the URL)."""
    parts = urllib.parse.urlsplit(uri.rstrip("/"))
    host = parts.hostname or ""
    netloc = (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port else "")
    request = urllib.request.Request(urllib.parse.urlunsplit(parts._replace(netloc=netloc)) + "/health")
    if parts.username is not None:
        token = base64.b64encode(f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}".encode())
        request.add_header("Authorization", f"Basic {token.decode()}")
    return request


def check_storage(url: str) -> None:
    """The Optuna storage opens: a database answers, or a journal file parses (or can be created)."""
    if "://" in url:
        _check_database(url, "study.storage")
        return
    path = Path(url)
    if not path.exists():
        _writable(path.parent, "study.storage folder")
        return
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    try:
        optuna.get_all_study_summaries(JournalStorage(JournalFileBackend(str(path))), include_best_trial=False)
    except Exception as exc:
        raise ConfigError(f"study.storage = '{path}' is not a readable Optuna journal ({type(exc).__name__}: "
                          f"{' '.join(str(exc).split())[:120]}); accepted: a journal Optuna wrote, or a new path") from exc


def _check_database(url: str, what: str) -> None:
    import sqlalchemy

    sqlite_file = url[len("sqlite:///"):].split("?")[0] if url.startswith("sqlite:///") else ""
    if sqlite_file and sqlite_file != ":memory:":
        # SQLite creates neither the folder nor, in a read-only one, its journal: say so rather than "unable to open".
        folder = Path(sqlite_file).parent.resolve()
        if not folder.exists():
            other = "a journal file path" if what == "study.storage" else "a tracking server URL"
            raise ConfigError(f"{what} = '{mask(url)}': folder '{folder}' does not exist, and SQLite does not create it; "
                              f"accepted: a SQLite file in an existing folder this user can write, {other}, or a database URL that answers")
        _writable(folder, f"{what} folder")
        if not Path(sqlite_file).exists():
            return  # connecting would create the file now, before any later check could still refuse the run
    try:
        engine = sqlalchemy.create_engine(url, connect_args={"connect_timeout": 5} if url.startswith("postgres") else {})
        with engine.connect():
            pass
        engine.dispose()
    except Exception as exc:
        first = mask(" ".join(str(exc).split()))[:200]
        accepted = "a journal file path or " if what == "study.storage" else "sqlite:///path/mlflow.db or "
        raise ConfigError(f"{what} = '{mask(url)}' cannot be reached ({type(exc).__name__}: {first}); "
                          f"accepted: {accepted}a database URL that answers (check host, port, user, password, database)") from exc
