"""A throw-away Cyrus IMAP server for the servers matrix of the sync tests.

Why a second real server: Dovecot is not the only IMAP server mailboxes live on, and Cyrus
answers differently where it matters to sync (special-use attributes in lower case,
``\\sent``; INBOX/Sent/Drafts/Trash auto-created at first login; a special-use folder cannot be
deleted; its own UIDVALIDITY and CONDSTORE bookkeeping).

Debian's ``cyrus-imapd`` conflicts with ``dovecot-imapd``, so it is never installed: its
packages (and the libraries they need that the machine lacks) are fetched with
``apt-get download`` and unpacked with ``dpkg-deb -x`` into a folder of ours
(``.cache/cyrus`` in the repository, git-ignored; ``CRM_INBOX_CYRUS_ROOT`` overrides it).
The binaries run from there with ``LD_LIBRARY_PATH`` and ``-C`` our ``imapd.conf``: nothing
in ``/etc`` is read or written, no system service is started, and it only listens on
``127.0.0.1`` ports chosen at runtime.

Cyrus logs only to syslog, which a test machine usually lacks (no ``/dev/log``): a start
failure reports the master's stderr, and the config keeps everything else quiet.

As root (the CI container), Cyrus' master drops to ``cyrus_user``: we use Debian's ``mail``
account, so the server's folder is created 0711 outside pytest's 0700 temp folders and the
spool and config are owned by that user.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from imapclient import IMAPClient

from devtools.devmail import HOST, _free_ports, _issue_certificates, _kill_with_parent
from devtools.imapops import ImapMailboxOps

__all__ = ["CyrusNotInstalledError", "CyrusStartError", "LocalCyrus", "ensure_cyrus_installed"]

# The packages we unpack: the server, and saslpasswd2 to write the users' password file.
_PACKAGES = ("cyrus-common", "cyrus-imapd", "sasl2-bin")
# libclamav (and its own dependencies) is only linked by cyr_virusscan, which we never run.
_NOT_NEEDED = frozenset({"libclamav12"})
_BINARIES = ("usr/lib/cyrus/bin/master", "usr/lib/cyrus/bin/imapd", "usr/lib/cyrus/bin/ctl_cyrusdb")
_SASLPASSWD = "usr/sbin/saslpasswd2"
_SPECIAL_USES = frozenset({"\\sent", "\\drafts", "\\trash", "\\junk", "\\archive"})
_SERVERNAME = "crm-inbox-cyrus"  # also the SASL realm the passwords are stored under
_SETUP_HINT = (
    "Run scripts/setup (it unpacks Debian's cyrus-imapd into .cache/cyrus with `apt-get download` "
    "and `dpkg-deb -x`; cyrus-imapd cannot be installed next to dovecot-imapd)."
)


class CyrusNotInstalledError(RuntimeError):
    """Cyrus could not be unpacked: tests must fail loudly, not skip."""


class CyrusStartError(RuntimeError):
    """The server did not come up; the message carries the master's stderr."""


def default_root() -> Path:
    configured = os.environ.get("CRM_INBOX_CYRUS_ROOT")
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parent.parent / ".cache" / "cyrus"


def _library_path(root: Path) -> str:
    dirs = [root / "usr/lib/x86_64-linux-gnu", root / "lib/x86_64-linux-gnu"]
    dirs += [p for p in root.glob("usr/lib/*-linux-gnu") if p not in dirs]
    return ":".join(str(d) for d in dirs)


def _missing_libraries(root: Path) -> list[str]:
    env = {**os.environ, "LD_LIBRARY_PATH": _library_path(root)}
    missing: set[str] = set()
    for binary in (*_BINARIES, _SASLPASSWD):
        out = subprocess.run(
            ["ldd", str(root / binary)], capture_output=True, text=True, env=env, check=False
        ).stdout
        missing.update(line.split()[0] for line in out.splitlines() if "not found" in line)
    return sorted(missing)


def _uninstalled_dependencies(packages: tuple[str, ...]) -> list[str]:
    """The library packages ours depend on that this machine does not have."""
    out = subprocess.run(
        ["apt-cache", "depends", "--no-recommends", "--no-suggests", *packages],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    wanted = set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].endswith("Depends:") and parts[1].startswith("lib"):
            wanted.add(parts[1].strip("<>"))
    missing = []
    for name in sorted(wanted - _NOT_NEEDED):
        status = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", name], capture_output=True, text=True, check=False
        ).stdout
        if "install ok installed" not in status:
            missing.append(name)
    return missing


def ensure_cyrus_installed(root: Path | None = None) -> Path:
    """Return the folder Cyrus is unpacked in, unpacking it first if needed (a few MB)."""
    root = root or default_root()
    if all((root / b).exists() for b in (*_BINARIES, _SASLPASSWD)):
        return root
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise CyrusNotInstalledError(
            f"Cyrus IMAP is not unpacked at {root} and apt-get is missing. {_SETUP_HINT}"
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root.parent, prefix=".cyrus-download-") as work:
        packages = [*_PACKAGES, *_uninstalled_dependencies(_PACKAGES)]
        # The download folder must be readable by apt's sandbox user, or apt warns.
        os.chmod(work, 0o755)
        got = subprocess.run(
            ["apt-get", "download", "-qq", *packages], cwd=work, capture_output=True, text=True, check=False
        )
        if got.returncode != 0:
            raise CyrusNotInstalledError(
                f"`apt-get download {' '.join(packages)}` failed: {got.stderr.strip()[-500:]} {_SETUP_HINT}"
            )
        staging = Path(work) / "root"
        for deb in sorted(Path(work).glob("*.deb")):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(staging)], check=True)
        missing = _missing_libraries(staging)
        if missing:
            raise CyrusNotInstalledError(f"Cyrus IMAP needs libraries not found: {', '.join(missing)}.")
        shutil.rmtree(root, ignore_errors=True)
        try:
            staging.rename(root)
        except OSError:
            # Another test run unpacked it at the same moment: theirs is as good as ours.
            if not all((root / b).exists() for b in (*_BINARIES, _SASLPASSWD)):
                raise
    return root


class LocalCyrus(ImapMailboxOps):
    """A private Cyrus IMAP server; use as a context manager.

    Plain IMAP (STARTTLS offered) on ``.port`` and implicit TLS on ``.ssl_port``, with a
    certificate from a private test CA (``.ca_file``). Users log in with PLAIN/LOGIN against a
    SASL password file of our own. ``base_dir`` defaults to a fresh folder under the system
    temp dir (it must be traversable by the ``mail`` user when running as root).
    """

    def __init__(
        self, base_dir: Path | None = None, *, root: Path | None = None, start_timeout: float = 20.0
    ):
        self._root = root
        self._base_dir = Path(base_dir) if base_dir else Path(tempfile.mkdtemp(prefix="crm-inbox-cyrus-"))
        self._owns_base_dir = base_dir is None
        self._start_timeout = start_timeout
        self._users: dict[str, str] = {}
        self._lock = threading.RLock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self._ssl_port: int | None = None
        self._is_root = os.geteuid() == 0
        account = pwd.getpwnam("mail") if self._is_root else pwd.getpwuid(os.getuid())
        self._user, self._uid, self._gid = account.pw_name, account.pw_uid, account.pw_gid

    # -- what tests read ------------------------------------------------------------

    @property
    def host(self) -> str:
        return HOST

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("LocalCyrus is not started")
        return self._port

    @property
    def ssl_port(self) -> int | None:
        if self._ssl_port is None:
            raise RuntimeError("LocalCyrus is not started")
        return self._ssl_port

    @property
    def ca_file(self) -> Path | None:
        return self._base_dir / "tls" / "ca.pem"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> LocalCyrus:
        with self._lock:
            if self.running:
                return self
            self._root = ensure_cyrus_installed(self._root)
            self._prepare()
            self._port, self._ssl_port = _free_ports(2)
            self._write_config()
            stderr = open(self._base_dir / "master.stderr", "wb")  # noqa: SIM115 - the child owns it
            env = {**os.environ, "LD_LIBRARY_PATH": _library_path(self._root)}
            try:
                self._proc = subprocess.Popen(
                    [
                        str(self._root / "usr/lib/cyrus/bin/master"),
                        *("-C", str(self._conf), "-M", str(self._base_dir / "cyrus.conf")),
                        *("-p", str(self._base_dir / "master.pid"), "-D"),
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=stderr,
                    stderr=stderr,
                    env=env,
                    start_new_session=True,  # own process group: stop() reaps every imapd
                    preexec_fn=_kill_with_parent,
                )
            finally:
                stderr.close()
            try:
                self._wait_ready()
            except BaseException:
                self._terminate()
                raise
            atexit.register(self.stop)
            return self

    def stop(self) -> None:
        with self._lock:
            atexit.unregister(self.stop)
            self._terminate()
            if self._owns_base_dir:
                shutil.rmtree(self._base_dir, ignore_errors=True)

    def __enter__(self) -> LocalCyrus:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- users and mailboxes ------------------------------------------------------------

    def add_user(self, name: str, password: str) -> None:
        """Create a user; INBOX, Sent, Drafts and Trash appear at its first login."""
        assert self._root is not None, "start() first"
        proc = subprocess.run(
            [str(self._root / _SASLPASSWD), "-p", "-c", "-f", str(self._sasldb), "-u", _SERVERNAME, name],
            input=password.encode(),
            capture_output=True,
            env={**os.environ, "LD_LIBRARY_PATH": _library_path(self._root)},
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"saslpasswd2 failed: {proc.stderr.decode(errors='replace')}")
        self._own(self._sasldb)
        with self._lock:
            self._users[name] = password

    @contextlib.contextmanager
    def client(self, user: str, *, tls: bool = False, timeout: float = 30.0) -> Iterator[IMAPClient]:
        password = self._users[user]
        if tls:
            context = ssl.create_default_context(cafile=str(self.ca_file))
            conn = IMAPClient(HOST, port=self.ssl_port, ssl=True, ssl_context=context, timeout=timeout)
        else:
            conn = IMAPClient(HOST, port=self.port, ssl=False, timeout=timeout)
        try:
            conn.login(user, password)
            yield conn
        finally:
            try:
                conn.logout()
            except Exception:
                conn.shutdown()

    def set_special_use(self, user: str, folder: str, use: str | None) -> None:
        """Set or clear a folder's special-use attribute (RFC 6154 via METADATA, RFC 5464).

        Cyrus refuses to delete a folder that has one; clearing it first is the way."""
        value = f'"{use}"'.encode() if use else b"NIL"
        with self.client(user) as conn:
            # imapclient has no SETMETADATA; its raw command sender quotes nothing for us.
            typ, data = conn._raw_command(
                b"SETMETADATA", [f'"{folder}"'.encode(), b"(/private/specialuse " + value + b")"], uid=False
            )
            if typ != "OK":
                raise RuntimeError(f"SETMETADATA {folder} failed: {data!r}")

    def create_special_folder(self, user: str, folder: str, use: str) -> None:
        """Create a folder with a special use. CREATE ... (USE (...)) (RFC 6154) is refused by
        Cyrus 3.6 below another folder ("SPECIAL-USE flag conflict"), so: CREATE, then set it."""
        self.create_folder(user, folder)
        self.set_special_use(user, folder, use)

    def delete_folder(self, user: str, folder: str) -> None:
        """Delete a folder, clearing its special use first (Cyrus refuses otherwise)."""
        self.set_special_use(user, folder, None)
        with self.client(user) as conn:
            conn.delete_folder(folder)

    def reset_uidvalidity(self, user: str, folder: str) -> int:
        """Give ``folder`` a new UIDVALIDITY with the same messages (and flags); returns it.

        Cyrus has no tool for it, so do what a migration does: copy the mail aside, delete the
        folder (clearing its special use first: Cyrus refuses to delete a special-use folder),
        create it again with the same special use, and copy the mail back: a new UIDVALIDITY and
        new UIDs. Not INBOX: it cannot be deleted, and Cyrus 3.6's imapd drops the connection on
        RENAME INBOX (the RFC 3501 way to empty it).
        """
        if folder.upper() == "INBOX":
            raise NotImplementedError("Cyrus cannot give INBOX a new UIDVALIDITY over IMAP")
        before = self.status(user, folder)
        holding = f"crm-inbox-moved-{time.monotonic_ns()}"
        with self.client(user) as conn:
            uses = [
                flag.decode() for flags, _sep, name in conn.list_folders() if name == folder for flag in flags
            ]
            use = next((f for f in uses if f.lower() in _SPECIAL_USES), None)
            conn.create_folder(holding)
            conn.select_folder(folder)
            uids = conn.search("ALL")
            if uids:
                conn.copy(uids, holding)
            conn.unselect_folder()
        if use:
            self.set_special_use(user, folder, None)
        with self.client(user) as conn:
            conn.delete_folder(folder)
        if use:
            self.create_special_folder(user, folder, use)
        else:
            self.create_folder(user, folder)
        with self.client(user) as conn:
            conn.select_folder(holding)
            uids = conn.search("ALL")
            if uids:
                conn.copy(uids, folder)
            conn.unselect_folder()
            conn.delete_folder(holding)
        after = self.status(user, folder)
        if after["UIDVALIDITY"] == before["UIDVALIDITY"] or after["MESSAGES"] != before["MESSAGES"]:
            raise RuntimeError(f"UIDVALIDITY reset of {user}/{folder} failed: before={before} after={after}")
        return after["UIDVALIDITY"]

    def log_tail(self) -> str:
        path = self._base_dir / "master.stderr"
        text = path.read_text(errors="replace")[-4000:] if path.exists() else ""
        return text or "(no output; Cyrus logs to syslog only)"

    # -- internals ------------------------------------------------------------------

    @property
    def _conf(self) -> Path:
        return self._base_dir / "imapd.conf"

    @property
    def _sasldb(self) -> Path:
        return self._base_dir / "sasldb2"

    def _own(self, path: Path) -> None:
        if self._is_root:
            os.chown(path, self._uid, self._gid)

    def _prepare(self) -> None:
        self._base_dir.mkdir(parents=True, exist_ok=True)
        self._base_dir.chmod(0o711)
        for sub in ("config", "spool", "tls"):
            (self._base_dir / sub).mkdir(exist_ok=True)
        for sub in ("db", "socket", "proc", "log", "msg", "ptclient", "lock", "user", "quota", "sieve"):
            (self._base_dir / "config" / sub).mkdir(exist_ok=True)
        if not (self._base_dir / "tls" / "key.pem").exists():
            assert self.ca_file is not None
            _issue_certificates(self.ca_file, self._base_dir / "tls/cert.pem", self._base_dir / "tls/key.pem")
        for path in [self._base_dir / "tls/key.pem", self._base_dir / "tls/cert.pem"]:
            self._own(path)
        for top in ("config", "spool"):
            for dirpath, _dirs, files in os.walk(self._base_dir / top):
                self._own(Path(dirpath))
                for name in files:
                    self._own(Path(dirpath) / name)

    def _write_config(self) -> None:
        base, root = self._base_dir, self._root
        assert root is not None
        bin_dir = root / "usr/lib/cyrus/bin"
        # Children are not given the master's -C: every command names our config itself.
        conf = f"-C {self._conf}"
        self._conf.write_text(
            f"""# Generated by devtools.cyrus.LocalCyrus -- private test instance on 127.0.0.1.
configdirectory: {base}/config
defaultpartition: default
partition-default: {base}/spool
serverbin: {bin_dir}
cyrus_user: {self._user}
servername: {_SERVERNAME}
sasl_pwcheck_method: auxprop
sasl_auxprop_plugin: sasldb
sasl_sasldb_path: {self._sasldb}
sasl_mech_list: PLAIN LOGIN
allowplaintext: yes
unixhierarchysep: yes
altnamespace: yes
# INBOX and these folders are created at the user's first login, with special-use flags.
autocreate_quota: 0
autocreate_inbox_folders: Sent | Drafts | Trash
autocreate_subscribe_folders: Sent | Drafts | Trash
xlist-sent: Sent
xlist-drafts: Drafts
xlist-trash: Trash
# expunge_mode and delete_mode keep Cyrus' defaults (delayed), as on a real installation.
tls_server_cert: {base}/tls/cert.pem
tls_server_key: {base}/tls/key.pem
lmtpsocket: {base}/config/socket/lmtp
idlesocket: {base}/config/socket/idle
notifysocket: {base}/config/socket/notify
syslog_prefix: crm-inbox-cyrus
# Gmail's layout ([Gmail]/All Mail) needs \\All, which Cyrus only accepts when listed here.
specialuse_extra: \\All
"""
        )
        (base / "cyrus.conf").write_text(
            f"""START {{
  recover cmd="{bin_dir}/ctl_cyrusdb {conf} -r"
}}
SERVICES {{
  imap cmd="{bin_dir}/imapd {conf}" listen="{HOST}:{self._port}" prefork=0 maxchild=200
  imaps cmd="{bin_dir}/imapd -s {conf}" listen="{HOST}:{self._ssl_port}" prefork=0 maxchild=200
}}
EVENTS {{
}}
"""
        )

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self._start_timeout
        for port, use_tls in ((self.port, False), (self.ssl_port or 0, True)):
            while True:
                assert self._proc is not None
                if self._proc.poll() is not None:
                    raise CyrusStartError(
                        f"cyrus master exited with {self._proc.returncode}:\n{self.log_tail()}"
                    )
                try:
                    with socket.create_connection((HOST, port), timeout=2.0) as raw:
                        if use_tls:
                            context = ssl.create_default_context(cafile=str(self.ca_file))
                            with context.wrap_socket(raw, server_hostname=HOST) as tls_sock:
                                greeting = tls_sock.recv(4096)
                        else:
                            greeting = raw.recv(4096)
                    if greeting.startswith(b"* OK"):
                        break
                except (OSError, ssl.SSLError):
                    pass
                if time.monotonic() > deadline:
                    raise CyrusStartError(f"cyrus did not greet on {HOST}:{port}:\n{self.log_tail()}")
                time.sleep(0.05)

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        # imapd children linger a moment after the master: reap our group only.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
