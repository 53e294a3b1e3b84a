"""A throw-away, self-contained Dovecot IMAP server for tests, benchmarks and the demo.

Why a real Dovecot instead of a fake: the sync engine's hard parts (UIDVALIDITY changes,
CONDSTORE/QRESYNC, MULTIAPPEND, special-use folders, TLS trust, odd MIME) are exactly
the things an in-process fake gets subtly wrong.  Debian's ``dovecot-imapd`` is started
here as an ordinary foreground child process with its own config file under
``base_dir``: no system service, nothing in ``/etc/dovecot`` is read or written, and it
only ever listens on ``127.0.0.1`` high ports chosen at runtime.

Running as root (the CI container does) needs three deliberate choices, because Dovecot
refuses to touch mail as uid 0 ("userdb returned 0 as uid" -- no setting overrides it):

* mail is owned by an unprivileged system user (``mail`` on Debian, else ``nobody``);
* that user cannot traverse pytest's ``0700`` temp directories, so mail processes are
  chrooted into ``base_dir/mail`` (root performs the chroot before dropping privileges,
  so the ancestors' permissions no longer matter).  glibc's iconv modules are hard-linked
  into the chroot so ``SEARCH CHARSET ISO-8859-1`` and body search in latin-1 mail work;
* the auth process reads the passwd-files as root for the same traversal reason.

As a non-root user everything simply runs as that user without any chroot.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import datetime as dt
import email.utils
import glob
import grp
import hashlib
import itertools
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType

from imapclient import IMAPClient

from devtools.imapops import ImapMailboxOps

__all__ = [
    "DoveadmError",
    "DovecotNotInstalledError",
    "DovecotStartError",
    "LocalDovecot",
    "ensure_dovecot_installed",
]

HOST = "127.0.0.1"
INBOX = "INBOX"
SPECIAL_FOLDERS: dict[str, str] = {"Sent": "\\Sent", "Drafts": "\\Drafts", "Trash": "\\Trash"}

_DOVECOT_CANDIDATES = ("/usr/sbin/dovecot", "/usr/local/sbin/dovecot")
_DOVEADM_CANDIDATES = ("/usr/bin/doveadm", "/usr/local/bin/doveadm")
_IMAP_BINARY_CANDIDATES = (
    "/usr/lib/dovecot/imap",
    "/usr/libexec/dovecot/imap",
    "/usr/local/libexec/dovecot/imap",
)
_SETUP_HINT = (
    "Run the project's setup, which installs Debian's IMAP server with "
    "`apt-get install -y dovecot-imapd` (no system service is used: the tests start their own)."
)
# Only characters that need no quoting or %-escaping in dovecot.conf values.
_SAFE_PATH = re.compile(r"^[A-Za-z0-9_./+@:,=-]+$")
# Dovecot's sockets live under its base_dir ("run/"), the deepest at token-login/imap-urlauth, and
# a Unix socket path holds at most 107 bytes: a deep folder (pytest's per-worker temp folders
# under xdist) gets its sockets in a short folder of ours in /tmp instead.
_SOCKET_PATH_MAX = 107 - len("/token-login/imap-urlauth")
_SAFE_USER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+@-]{0,63}$")
# Top-level names inside the chroot that we populate ourselves (glibc iconv modules).
_RESERVED_USERS = frozenset({"usr", "lib", "lib64", "etc"})
_MAILDIR_FLAG_LETTERS: dict[str, str] = {
    "\\draft": "D",
    "\\flagged": "F",
    "\\answered": "R",
    "\\seen": "S",
    "\\deleted": "T",
}
_DATE_HEADER = re.compile(rb"^Date:[ \t]*(.*?)\r?$", re.IGNORECASE | re.MULTILINE)
_PR_SET_PDEATHSIG = 1


class DovecotNotInstalledError(RuntimeError):
    """Dovecot (dovecot-imapd) is missing: tests must fail loudly, not skip."""


class DovecotStartError(RuntimeError):
    """The server did not come up; the message carries the tail of its log."""


class DoveadmError(RuntimeError):
    """A ``doveadm`` maintenance command failed."""


def _first_existing(candidates: Iterable[str], name: str) -> Path | None:
    found = shutil.which(name)
    if found:
        return Path(found)
    for candidate in candidates:
        if os.access(candidate, os.X_OK):
            return Path(candidate)
    return None


def ensure_dovecot_installed() -> Path:
    """Return the ``dovecot`` binary, or raise a clear error saying how to install it.

    Checks the imap protocol binary too: ``dovecot-core`` alone starts but then every
    IMAP login fails, which would be a much more confusing error.
    """
    binary = _first_existing(_DOVECOT_CANDIDATES, "dovecot")
    if binary is None:
        raise DovecotNotInstalledError(f"Dovecot IMAP server not found (looked for `dovecot`). {_SETUP_HINT}")
    if not any(os.access(p, os.X_OK) for p in _IMAP_BINARY_CANDIDATES):
        raise DovecotNotInstalledError(
            f"Dovecot is installed at {binary} but its IMAP service binary is missing "
            f"(package dovecot-imapd). {_SETUP_HINT}"
        )
    return binary


def _doveadm_binary() -> Path:
    binary = _first_existing(_DOVEADM_CANDIDATES, "doveadm")
    if binary is None:
        raise DovecotNotInstalledError(f"`doveadm` not found. {_SETUP_HINT}")
    return binary


def _free_ports(count: int) -> list[int]:
    """Ask the kernel for distinct free loopback ports (held together so they differ)."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _kill_with_parent() -> None:
    """Runs in the child before exec: SIGTERM dovecot if the Python process dies hard.

    Without it a ``kill -9``'d pytest leaves a dovecot holding its ports forever.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _issue_certificates(ca_path: Path, cert_path: Path, key_path: Path) -> None:
    """A private test CA (trustme) and a server certificate it issued for localhost and
    127.0.0.1: clients trust the CA file, anything using the system trust store must not."""
    import trustme

    ca = trustme.CA(organization_name="crm-inbox devmail")
    server = ca.issue_cert("localhost", HOST)
    ca.cert_pem.write_to_path(str(ca_path))
    with cert_path.open("wb") as handle:
        for blob in server.cert_chain_pems:
            handle.write(blob.bytes())
    server.private_key_pem.write_to_path(str(key_path))
    key_path.chmod(0o600)


def _gconv_dirs() -> list[Path]:
    """glibc's iconv module directories (Dovecot needs them for non-UTF-8 charsets)."""
    found = set()
    for pattern in ("/usr/lib/*/gconv", "/usr/lib64/gconv", "/usr/lib/gconv", "/lib/*/gconv"):
        for candidate in glob.glob(pattern):
            path = Path(candidate)
            if (path / "gconv-modules").exists() or (path / "gconv-modules.cache").exists():
                found.add(path.resolve())
    return sorted(found)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _header_date(message: bytes) -> float | None:
    """Timestamp of the Date: header, used as INTERNALDATE for directly loaded mail."""
    head = message.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    match = _DATE_HEADER.search(head)
    if not match:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(match.group(1).decode("ascii", "replace"))
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()


class LocalDovecot(ImapMailboxOps):
    """A private Dovecot IMAP server rooted at ``base_dir``; use as a context manager.

    Layout: ``dovecot.conf``, ``users/<name>`` (passwd-files), ``run/`` (base_dir), ``state/``,
    ``log/dovecot.log``, ``tls/ca.pem`` (the test CA), ``cert.pem`` + ``key.pem``, ``mail/<user>/Maildir``.
    Helper methods talk IMAP as the user (the same path the sync engine uses) except
    ``load_maildir`` (bulk file writes for big benchmarks) and ``reset_uidvalidity``
    (``doveadm``, because no IMAP command can do it).
    """

    def __init__(
        self,
        base_dir: Path,
        *,
        tls: bool = True,
        start_timeout: float = 15.0,
        oauth2_introspection_url: str | None = None,
    ) -> None:
        """`oauth2_introspection_url`: also accept XOAUTH2 and OAUTHBEARER logins, each token
        checked by an RFC 7662 introspection request to that URL (Dovecot's `oauth2` passdb)."""
        self._base_dir = Path(base_dir).absolute()
        if oauth2_introspection_url is not None and not _SAFE_PATH.match(oauth2_introspection_url):
            raise ValueError("the introspection URL is written unquoted into the config")
        self._oauth2_url = oauth2_introspection_url
        if not _SAFE_PATH.match(str(self._base_dir)):
            raise ValueError(
                f"base_dir {self._base_dir} must only contain [A-Za-z0-9_./+@:,=-] "
                "(it is written unquoted into dovecot.conf)"
            )
        self._tls = tls
        self._start_timeout = start_timeout
        self._users: dict[str, str] = {}
        self._lock = threading.RLock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr_file: int | None = None
        self._port: int | None = None
        self._ssl_port: int | None = None
        self._maildir_seq = itertools.count()
        self._is_root = os.geteuid() == 0
        if self._is_root:
            account = self._unprivileged_mail_account()
            self._mail_uid, self._mail_gid = account.pw_uid, account.pw_gid
        else:
            self._mail_uid, self._mail_gid = os.getuid(), os.getgid()

    # -- properties ---------------------------------------------------------------

    @property
    def host(self) -> str:
        """Always loopback: the dev server must never be reachable from the network."""
        return HOST

    @property
    def port(self) -> int:
        """Plaintext IMAP port (plaintext LOGIN allowed; STARTTLS offered when tls)."""
        if self._port is None:
            raise RuntimeError("LocalDovecot is not started")
        return self._port

    @property
    def ssl_port(self) -> int | None:
        """Implicit-TLS IMAP port, or None when constructed with tls=False."""
        if not self._tls:
            return None
        if self._ssl_port is None:
            raise RuntimeError("LocalDovecot is not started")
        return self._ssl_port

    @property
    def ca_file(self) -> Path | None:
        """The private CA that issued the server's certificate; clients trust it via ``cafile=``."""
        return self._base_dir / "tls" / "ca.pem" if self._tls else None

    @property
    def cert_file(self) -> Path:
        """The server's certificate chain (for other test servers that share it, e.g. SMTP)."""
        return self._cert_path

    @property
    def key_file(self) -> Path:
        return self._key_path

    @property
    def base_dir(self) -> Path:
        return self._base_dir

    @property
    def run_dir(self) -> Path:
        """Dovecot's own base_dir (sockets, pid file): ``run/``, or a short folder in /tmp
        named after it when ``run/`` is too deep for a Unix socket path."""
        run = self._base_dir / "run"
        if len(str(run)) <= _SOCKET_PATH_MAX:
            return run
        return Path("/tmp") / f"crm-inbox-dovecot-{hashlib.sha256(str(run).encode()).hexdigest()[:16]}"

    @property
    def conf_path(self) -> Path:
        return self._base_dir / "dovecot.conf"

    @property
    def log_path(self) -> Path:
        return self._base_dir / "log" / "dovecot.log"

    @property
    def users(self) -> dict[str, str]:
        """A copy of user -> password, e.g. to hand credentials to the sync engine."""
        with self._lock:
            return dict(self._users)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def maildir_path(self, user: str, folder: str = INBOX) -> Path:
        """On-disk Maildir++ directory of ``folder`` (LAYOUT=fs: INBOX is the root)."""
        root = self._base_dir / "mail" / user / "Maildir"
        return root if folder.upper() == INBOX else root.joinpath(*folder.split("/"))

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> LocalDovecot:
        """Write the config and start dovecot in the foreground; return once it greets.

        Ports are kept across stop()/start() so a test can simulate a server restart
        while the client keeps its configured address.
        """
        with self._lock:
            if self.running:
                return self
            binary = ensure_dovecot_installed()
            self._prepare_dirs()
            if self._tls and not (self.ca_file and self.ca_file.exists() and self._key_path.exists()):
                assert self.ca_file is not None
                _issue_certificates(self.ca_file, self._cert_path, self._key_path)
            self._load_users()
            last_error: DovecotStartError | None = None
            for attempt in range(3):
                if self._port is None or attempt > 0:
                    self._port, self._ssl_port = _free_ports(2)
                self.conf_path.write_text(self._render_config())
                if self._oauth2_url:
                    self._oauth2_conf_path.write_text(self._render_oauth2_config())
                try:
                    self._spawn(binary)
                    self._disable_auth_penalty()
                    self._wait_ready()
                    atexit.register(self.stop)
                    return self
                except DovecotStartError as exc:
                    last_error = exc
                    self._terminate()
                    if "in use" not in str(exc):
                        raise
            assert last_error is not None
            raise last_error

    def stop(self) -> None:
        """Stop dovecot: SIGTERM, then ``doveadm stop``, then SIGKILL to its group."""
        with self._lock:
            atexit.unregister(self.stop)
            self._terminate()
            if self.run_dir.parent != self._base_dir:  # the short folder in /tmp is ours alone
                shutil.rmtree(self.run_dir, ignore_errors=True)

    def __enter__(self) -> LocalDovecot:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- users and IMAP helpers ---------------------------------------------------

    def add_user(self, name: str, password: str) -> None:
        """Create (or re-password) a user; works while running (passwd-file is re-read).

        The home is pre-created so Dovecot does not log a spurious chdir() error.
        """
        if not _SAFE_USER.match(name) or name.lower() in _RESERVED_USERS:
            raise ValueError(f"invalid user name {name!r}")
        if any(c in password for c in ":\r\n\0"):
            raise ValueError("password must not contain ':', newlines or NUL")
        with self._lock:
            previous = self._users.get(name)
            self._users[name] = password
            self._write_user(name)
            if previous is not None and previous != password and self.running:
                self._wait_for_password(name, password)
            home = self._base_dir / "mail" / name
            home.mkdir(parents=True, exist_ok=True)
            home.chmod(0o700)
            self._own(home)

    @contextlib.contextmanager
    def client(self, user: str, *, tls: bool = False, timeout: float = 30.0) -> Iterator[IMAPClient]:
        """A logged-in IMAPClient for ``user`` (plain port, or TLS port trusting ca_file)."""
        password = self._password(user)
        if tls:
            if self.ca_file is None:
                raise RuntimeError("server was started with tls=False")
            context = ssl.create_default_context(cafile=str(self.ca_file))
            conn = IMAPClient(self.host, port=self.ssl_port, ssl=True, ssl_context=context, timeout=timeout)
        else:
            conn = IMAPClient(self.host, port=self.port, ssl=False, timeout=timeout)
        try:
            conn.login(user, password)
            yield conn
        finally:
            try:
                conn.logout()
            except Exception:
                conn.shutdown()

    def load_maildir(
        self,
        user: str,
        folder: str,
        messages: Iterable[bytes],
        *,
        flags: Sequence[str] = (),
        date_from_header: bool = True,
    ) -> int:
        """Bulk-load messages by writing Maildir files directly; returns how many.

        For 20,000-message benchmarks: no IMAP round trips (measured ~5,000 msg/s versus
        ~2,000 for MULTIAPPEND and ~500 for one APPEND at a time).  Files go
        to ``cur/`` (so they are not \\Recent) via ``tmp/`` + rename, with names that sort
        in input order so Dovecot assigns UIDs in that order when it next syncs the
        folder (first SELECT/STATUS after loading pays the indexing cost).  The file
        mtime -- Dovecot's INTERNALDATE for maildir -- is the Date: header when possible.
        Only system flags are supported (keywords would need ``dovecot-keywords``).
        """
        unknown = [f for f in flags if f.lower() not in _MAILDIR_FLAG_LETTERS]
        if unknown:
            raise ValueError(f"load_maildir supports only system flags, not {unknown}")
        self._ensure_folder(user, folder)
        target = self.maildir_path(user, folder)
        info = ":2," + "".join(sorted({_MAILDIR_FLAG_LETTERS[f.lower()] for f in flags}))
        secs = int(time.time())
        pid = os.getpid()
        tmp_dir, cur_dir = target / "tmp", target / "cur"
        chown = self._is_root
        count = 0
        for raw in messages:
            seq = next(self._maildir_seq)
            base = f"{secs}.M{seq}P{pid}.crm-inbox,S={len(raw)}"
            tmp_path = tmp_dir / base
            with open(tmp_path, "xb") as handle:
                handle.write(raw)
                if chown:
                    os.fchown(handle.fileno(), self._mail_uid, self._mail_gid)
            stamp = _header_date(raw) if date_from_header else None
            if stamp is not None:
                os.utime(tmp_path, (stamp, stamp))
            os.rename(tmp_path, cur_dir / (base + info))
            count += 1
        return count

    def reset_uidvalidity(self, user: str, folder: str, *, renumber: bool = False) -> int:
        """Give ``folder`` a new UIDVALIDITY, keeping its messages; returns the new value.

        Default: ``doveadm mailbox update --uid-validity`` (the supported way; UIDs stay
        the same, like a restored server).  ``renumber=True`` additionally moves every
        UID up by UIDNEXT+1000 by rewriting ``dovecot-uidlist`` under Dovecot's dotlock
        and deleting the folder's index files, like a migration to a new server, so a
        client that ignores UIDVALIDITY visibly breaks.  Open sessions on the folder see
        the change on their next sync (Dovecot disconnects them, as it would for real);
        ``renumber`` kicks all of the user's sessions first, because an open session
        would otherwise write its cached index back over the rewrite.
        """
        before = self.status(user, folder)
        old = before["UIDVALIDITY"]
        new = old + 1 if old < 0xFFFFFFFF else 1
        if renumber:
            # Without this a session could restore the old UIDVALIDITY next to the new
            # UIDs -- the one combination a real server never produces.
            self.kick(user)
            self._rewrite_uidlist(user, folder, new, shift=before["UIDNEXT"] + 1000)
        else:
            self.doveadm("mailbox", "update", "--uid-validity", str(new), "-u", user, folder)
        after = self.status(user, folder)
        if after["UIDVALIDITY"] != new or after["MESSAGES"] != before["MESSAGES"]:
            raise DoveadmError(f"UIDVALIDITY reset of {user}/{folder} failed: before={before} after={after}")
        return new

    def kick(self, user: str, *, timeout: float = 5.0) -> int:
        """Disconnect all of ``user``'s IMAP sessions, as a server restart or migration would.

        Waits until the session processes are gone; returns how many were kicked.
        """
        pids = self._session_pids(user)
        kicked = len(pids)
        if not pids:
            return 0
        with contextlib.suppress(DoveadmError):  # exit 68: already gone
            self.doveadm("kick", user)
        deadline = time.monotonic() + timeout
        while pids and time.monotonic() < deadline:
            alive = set()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, 0)
                    alive.add(pid)
            pids = alive
            if pids:
                time.sleep(0.01)
        if pids:
            raise DoveadmError(f"sessions of {user} still alive after kick: {sorted(pids)}")
        return kicked

    def doveadm(self, *args: str, timeout: float = 60.0) -> str:
        """Run ``doveadm -c <our conf> ...`` (never the system config); return stdout."""
        cmd = [str(_doveadm_binary()), "-c", str(self.conf_path), *args]
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
        if proc.returncode != 0:
            raise DoveadmError(
                f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.decode(errors='replace').strip()}"
            )
        return proc.stdout.decode(errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        """Last lines of dovecot's log plus its stderr, for error messages."""
        chunks = []
        for path in (self.log_path, self._base_dir / "log" / "dovecot.stderr"):
            if path.exists():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                if text:
                    chunks.append(f"--- {path} ---\n" + "\n".join(text))
        return "\n".join(chunks) or "(no dovecot log output)"

    # -- internals ----------------------------------------------------------------

    @property
    def _cert_path(self) -> Path:
        return self._base_dir / "tls" / "cert.pem"

    @property
    def _key_path(self) -> Path:
        return self._base_dir / "tls" / "key.pem"

    @property
    def _users_dir(self) -> Path:
        return self._base_dir / "users"

    @staticmethod
    def _unprivileged_mail_account() -> pwd.struct_passwd:
        for name in ("mail", "nobody"):
            try:
                return pwd.getpwnam(name)
            except KeyError:
                continue
        raise DovecotStartError(
            "running as root needs an unprivileged `mail` or `nobody` account to own mail"
        )

    def _session_pids(self, user: str) -> set[int]:
        """PIDs of ``user``'s IMAP processes according to Dovecot's anvil."""
        pids = set()
        for line in self.doveadm("who", "-1", user).splitlines()[1:]:
            fields = line.split()
            if len(fields) >= 3 and fields[0] == user and fields[2].isdigit():
                pids.add(int(fields[2]))
        return pids

    def _password(self, user: str) -> str:
        with self._lock:
            try:
                return self._users[user]
            except KeyError:
                raise KeyError(f"unknown user {user!r}; call add_user() first") from None

    def _own(self, path: Path) -> None:
        if self._is_root:
            os.chown(path, self._mail_uid, self._mail_gid)

    def _prepare_dirs(self) -> None:
        for sub in ("run", "state", "log", "tls"):
            (self._base_dir / sub).mkdir(parents=True, exist_ok=True)
        run = self.run_dir
        if run.parent != self._base_dir:
            run.mkdir(mode=0o755, exist_ok=True)
            # A shared folder: refuse one planted by someone else (or a symlink to elsewhere).
            info = run.lstat()
            if not run.is_dir() or run.is_symlink() or info.st_uid != os.geteuid():
                raise DovecotStartError(f"{run} exists and is not a folder of ours")
        mail = self._base_dir / "mail"
        mail.mkdir(parents=True, exist_ok=True)
        if self._is_root:
            mail.chmod(0o755)
            self._populate_chroot(mail)

    @staticmethod
    def _populate_chroot(root: Path) -> None:
        """Hard-link glibc's iconv modules into the chroot (copy if linking fails)."""
        for gconv in _gconv_dirs():
            target = root / gconv.relative_to("/")
            if target.exists():
                continue
            tmp = target.with_name(target.name + ".partial")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(gconv, tmp, symlinks=True, copy_function=_link_or_copy)
            tmp.rename(target)

    def _load_users(self) -> None:
        """Re-read existing passwd-files so a restarted base_dir keeps its users."""
        for path in sorted(self._users_dir.glob("*")):
            name, _, rest = path.read_text().partition(":")
            if name == path.name and rest.startswith("{PLAIN}"):
                self._users.setdefault(name, rest[len("{PLAIN}") :].split(":", 1)[0].rstrip("\n"))

    def _write_user(self, name: str) -> None:
        """One passwd-file per user, replaced atomically.

        Dovecot re-stats a passwd-file at most once per second, so a single shared file
        would make a user created right after another one's login unknown for up to a
        second.  With ``users/%u`` every new user is a file Dovecot has never opened.
        """
        self._users_dir.mkdir(exist_ok=True)
        path = self._users_dir / name
        tmp = self._users_dir / f".{name}.{os.getpid()}.{threading.get_ident()}.tmp"
        tmp.write_text(f"{name}:{{PLAIN}}{self._users[name]}\n")
        tmp.chmod(0o600)
        os.replace(tmp, path)

    def _wait_for_password(self, name: str, password: str, timeout: float = 3.0) -> None:
        """A *changed* password is only seen after Dovecot's 1 s re-stat interval."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.doveadm("auth", "test", "-x", "service=imap", name, password)
                return
            except DoveadmError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    @property
    def _oauth2_conf_path(self) -> Path:
        return self._base_dir / "dovecot-oauth2.conf.ext"

    def _render_oauth2_config(self) -> str:
        # Dovecot 2.3 never checks `exp` itself: the introspection server answers active=false
        # for an expired token. 5xx or no answer -> NO [UNAVAILABLE] (a temporary failure).
        return f"""introspection_mode = post
introspection_url = {self._oauth2_url}
username_attribute = username
active_attribute = active
active_value = true
username_format = %Lu
timeout_msecs = 5000
"""

    def _auth_config(self) -> str:
        """The mechanisms and passdbs. With OAuth2 every passdb is pinned to its mechanisms:
        otherwise wrong passwords reach the introspection server and tokens are tried as
        passwords."""
        passwd_file = f"  args = scheme=PLAIN username_format=%u {self._users_dir}/%u\n"
        if not self._oauth2_url:
            return f"auth_mechanisms = plain login\npassdb {{\n  driver = passwd-file\n{passwd_file}}}\n"
        return (
            "auth_mechanisms = plain login xoauth2 oauthbearer\n"
            f"passdb {{\n  driver = passwd-file\n  mechanisms = plain login none\n{passwd_file}}}\n"
            "passdb {\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n"
            f"  args = {self._oauth2_conf_path}\n}}\n"
        )

    def _render_config(self) -> str:
        base = self._base_dir
        mail_root = base / "mail"
        if self._is_root:
            # "/./" splits chroot from home; valid_chroot_dirs must allow it.
            home = f"{mail_root}/./%u"
            internal_user, login_user, internal_group = "dovecot", "dovenull", "dovecot"
            for account in (internal_user, login_user):
                pwd.getpwnam(account)  # Debian's dovecot-core creates both
            root_only = f"""valid_chroot_dirs = {mail_root}
service auth {{
  # The passwd-files live under base_dir, which the dovecot user may not traverse.
  user = root
}}
"""
            no_chroot = ""
        else:
            home = f"{mail_root}/%u"
            # Dovecot cannot switch users here: every service runs as us.
            internal_user = login_user = pwd.getpwuid(os.getuid()).pw_name
            internal_group = grp.getgrgid(os.getgid()).gr_name
            root_only = ""
            no_chroot = "  chroot =\n"
        if self._tls:
            tls = f"""ssl = yes
ssl_cert = <{self._cert_path}
ssl_key = <{self._key_path}
ssl_min_protocol = TLSv1.2
"""
            imaps = f"""  inet_listener imaps {{
    port = {self._ssl_port}
    ssl = yes
  }}
"""
        else:
            tls, imaps = "ssl = no\n", ""
        mailboxes = "".join(
            f"  mailbox {name} {{\n    special_use = {use}\n    auto = subscribe\n  }}\n"
            for name, use in SPECIAL_FOLDERS.items()
        )
        return f"""# Generated by devtools.devmail.LocalDovecot -- private dev/test instance.
# Self-contained (no system config is read); it only listens on 127.0.0.1.
instance_name = crm-inbox-devmail
base_dir = {self.run_dir}
state_dir = {base}/state
log_path = {base}/log/dovecot.log
protocols = imap
listen = {HOST}
login_greeting = crm-inbox devmail ready.
default_internal_user = {internal_user}
default_login_user = {login_user}
default_internal_group = {internal_group}
first_valid_uid = 1
first_valid_gid = 1
{root_only}disable_plaintext_auth = no
auth_verbose = yes
# Failed logins are part of the tests: no 2 s failure delay (the per-IP penalty is
# switched off in start(), see _disable_auth_penalty).
auth_failure_delay = 0
{self._auth_config()}userdb {{
  driver = static
  args = uid={self._mail_uid} gid={self._mail_gid} home={home}
}}
mail_location = maildir:~/Maildir:LAYOUT=fs
mail_plugins =
# Test data is disposable; skipping fsync makes APPEND several times faster.
mail_fsync = never
{tls}namespace inbox {{
  inbox = yes
  separator = /
{mailboxes}}}
protocol imap {{
  mail_max_userip_connections = 1000
  mail_plugins =
}}
service imap-login {{
{no_chroot}  inet_listener imap {{
    port = {self._port}
  }}
{imaps}  # Long-lived login processes: many short test connections stay fast.  Started on
  # the first connection, not at boot, so auth starts after _disable_auth_penalty.
  service_count = 0
  process_min_avail = 0
}}
service imap {{
  process_limit = 512
}}
service anvil {{
{no_chroot}}}
"""

    def _spawn(self, binary: Path) -> None:
        stderr_path = self._base_dir / "log" / "dovecot.stderr"
        self._stderr_file = os.open(stderr_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        # Leftovers of a killed run: a stale pid file blocks startup, and a stale penalty
        # socket would fool _disable_auth_penalty into unlinking the wrong file.
        for stale in ("master.pid", "anvil-auth-penalty"):
            (self.run_dir / stale).unlink(missing_ok=True)
        self._proc = subprocess.Popen(
            [str(binary), "-F", "-c", str(self.conf_path)],
            stdin=subprocess.DEVNULL,
            stdout=self._stderr_file,
            stderr=self._stderr_file,
            start_new_session=True,  # own process group: stop() can reap every child
            preexec_fn=_kill_with_parent,  # only calls prctl(); takes no locks
        )

    def _disable_auth_penalty(self) -> None:
        """Remove the anvil-auth-penalty socket before the auth process first starts.

        After a failed login Dovecot delays *every* later login from that IP by 2-15 s
        (anvil auth penalty).  All test clients are 127.0.0.1, so one wrong-password test
        would slow down the rest of the suite.  No setting disables it in 2.3, but the
        auth process silently skips penalties when it cannot find this socket at start,
        and auth only starts with the first IMAP connection (login processes are not
        pre-forked), which we make only after this.
        """
        socket_path = self.run_dir / "anvil-auth-penalty"
        deadline = time.monotonic() + self._start_timeout
        while not socket_path.exists():
            if self._proc is None or self._proc.poll() is not None or time.monotonic() > deadline:
                return  # _wait_ready reports the failure with the log
            time.sleep(0.005)
        socket_path.unlink(missing_ok=True)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self._start_timeout
        pending: list[tuple[int, bool]] = [(self.port, False)]
        if self._tls:
            pending.append((self._ssl_port or 0, True))
        last_exc: Exception | None = None
        while pending:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise DovecotStartError(
                    f"dovecot exited with status {self._proc.returncode} during startup "
                    f"(config {self.conf_path}):\n{self.log_tail()}"
                )
            port, use_tls = pending[0]
            try:
                greeting = self._read_greeting(port, use_tls)
                if not greeting.startswith(b"* OK"):
                    raise OSError(f"unexpected greeting {greeting!r}")
                pending.pop(0)
                continue
            except (OSError, ssl.SSLError) as exc:
                last_exc = exc
            if time.monotonic() > deadline:
                raise DovecotStartError(
                    f"dovecot did not greet on {HOST}:{port} within {self._start_timeout:.0f}s "
                    f"(last error: {last_exc}; config {self.conf_path}):\n{self.log_tail()}"
                )
            time.sleep(0.02)

    def _read_greeting(self, port: int, use_tls: bool) -> bytes:
        with socket.create_connection((HOST, port), timeout=2.0) as raw:
            if use_tls:
                context = ssl.create_default_context(cafile=str(self.ca_file))
                with context.wrap_socket(raw, server_hostname=HOST) as tls_sock:
                    return tls_sock.recv(4096)
            return raw.recv(4096)

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            pgid = proc.pid  # start_new_session: the group id is the master's pid
            if proc.poll() is None:
                # TERM the whole group at once: same effect as the master relaying it, but
                # the master alone waits ~1 s for its children before exiting.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pgid, signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(Exception):
                        self.doveadm("stop", timeout=5)
                    try:
                        proc.wait(timeout=5)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait(timeout=5)
            # Reap any straggler (e.g. an imap process mid-shutdown) in *our* group only.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
        if self._stderr_file is not None:
            os.close(self._stderr_file)
            self._stderr_file = None

    def _ensure_folder(self, user: str, folder: str) -> None:
        """Make Dovecot create the user's Maildir and the folder before raw file writes."""
        if (self.maildir_path(user, folder) / "cur").is_dir():
            return
        with self.client(user) as conn:
            if folder.upper() != INBOX and not conn.folder_exists(folder):
                conn.create_folder(folder)
                conn.subscribe_folder(folder)
            conn.folder_status(folder, ["MESSAGES"])
        if not (self.maildir_path(user, folder) / "cur").is_dir():
            raise RuntimeError(f"Dovecot did not create {self.maildir_path(user, folder)}")

    def _rewrite_uidlist(self, user: str, folder: str, uidvalidity: int, *, shift: int) -> None:
        """Renumber every UID by ``shift`` and set a new UIDVALIDITY, offline-style."""
        directory = self.maildir_path(user, folder)
        uidlist = directory / "dovecot-uidlist"
        lock = directory / "dovecot-uidlist.lock"
        deadline = time.monotonic() + 10
        while True:
            try:
                fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                break
            except FileExistsError:
                if time.monotonic() > deadline:
                    raise DoveadmError(f"{lock} is held by Dovecot for more than 10 s") from None
                time.sleep(0.02)
        try:
            lines = uidlist.read_text().splitlines()
            out: list[str] = []
            next_uid = shift + 1
            for line in lines[1:]:
                uid_text, sep, rest = line.partition(" ")
                uid = int(uid_text) + shift
                next_uid = max(next_uid, uid + 1)
                out.append(f"{uid}{sep}{rest}")
            header = lines[0].split(" ")
            fields = [header[0]] + [
                f for f in header[1:] if not f.startswith(("V", "N"))
            ]  # keep version + GUID
            fields[1:1] = [f"V{uidvalidity}", f"N{next_uid}"]
            os.write(fd, ("\n".join([" ".join(fields), *out]) + "\n").encode())
            if self._is_root:
                os.fchown(fd, self._mail_uid, self._mail_gid)
            for index in directory.glob("dovecot.index*"):
                index.unlink()
            os.rename(lock, uidlist)  # dotlock protocol: the lock file becomes the new list
        except BaseException:
            lock.unlink(missing_ok=True)
            raise
        finally:
            os.close(fd)
