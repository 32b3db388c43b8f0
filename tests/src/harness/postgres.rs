//! PostgreSQL primaries and hot standbys running inside test namespaces, so
//! replication can be driven pod-to-pod across whatever joins the sites.
//!
//! Debian's server binaries (`/usr/lib/postgresql/<major>/bin`) are run as the
//! `postgres` OS user, since PostgreSQL refuses to run as root; clients
//! (`psql`, `pg_isready`) run as root and connect over TCP to the server's
//! listen address from inside its namespace. Every instance lives in its own
//! directory under a caller-supplied scratch dir and is stopped on drop.
//!
//! A [`Postgres`] remembers its namespace by name only, so drop it before the
//! [`Netns`] it runs in (declare the namespace first).

use std::fmt;
use std::fs;
use std::io;
use std::net::IpAddr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::{chown, Pid, User};

use super::netns::{run_ok, run_through, Netns};
use super::process::ChildGuard;
use super::{io_context, wait_until_ok, HarnessError, POLL_MAX, POLL_MIN};

/// The TCP port every test server listens on (each has its own address).
pub const PORT: u16 = 5432;
/// The role standbys connect as; it has REPLICATION and needs no password.
pub const REPLICATION_ROLE: &str = "replicator";
/// The OS user the server binaries run as.
pub const OS_USER: &str = "postgres";
/// Where Debian installs one directory per PostgreSQL major version.
const DEBIAN_LIB_DIR: &str = "/usr/lib/postgresql";

/// How long `initdb` may take.
const INITDB_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a base backup may take (it crosses the network).
const BASEBACKUP_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a server may take to accept connections after it is started.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// A hard bound on any one `psql` or `pg_isready` run.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a client waits for a TCP connection before giving up.
const CONNECT_TIMEOUT_SECS: u32 = 5;
/// How long [`Postgres::stop`] and `Drop` wait for a fast shutdown.
const FAST_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How long `Drop` waits for an immediate shutdown after a fast one stalled.
const IMMEDIATE_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Field separator for multi-column query results (ASCII unit separator).
const FIELD_SEP: &str = "\x1f";

/// Client authentication for tests only: everyone is trusted, from anywhere.
const PG_HBA: &str = "\
# Written by causeway-tests: trust everything (throw-away test servers only).
local   all          all                trust
host    all          all    0.0.0.0/0   trust
host    all          all    ::/0        trust
local   replication  all                trust
host    replication  all    0.0.0.0/0   trust
host    replication  all    ::/0        trust
";

static NEXT_INSTANCE: AtomicU32 = AtomicU32::new(0);

/// The directory holding Debian's server binaries of the newest installed major version.
pub fn postgres_bin_dir() -> Result<PathBuf, HarnessError> {
    let missing = |why: String| HarnessError::Io {
        context: format!(
            "PostgreSQL server binaries not found ({why}); install Debian's postgresql package \
             (apt-get install postgresql)"
        ),
        source: io::Error::from(io::ErrorKind::NotFound),
    };
    let entries = fs::read_dir(DEBIAN_LIB_DIR)
        .map_err(|e| missing(format!("cannot list {DEBIAN_LIB_DIR}: {e}")))?;
    let mut best: Option<(u32, PathBuf)> = None;
    for entry in entries.flatten() {
        let Some(major) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let bin = entry.path().join("bin");
        let complete = ["postgres", "initdb", "pg_basebackup", "psql", "pg_isready"]
            .iter()
            .all(|b| bin.join(b).is_file());
        if complete && best.as_ref().is_none_or(|(m, _)| major > *m) {
            best = Some((major, bin));
        }
    }
    best.map(|(_, bin)| bin).ok_or_else(|| {
        missing(format!(
            "no {DEBIAN_LIB_DIR}/<major>/bin with postgres, initdb, pg_basebackup, psql and pg_isready"
        ))
    })
}

/// One row of `pg_stat_replication` as seen on a primary.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicationRow {
    /// The standby's `application_name` (the harness sets it to the standby's instance name).
    pub application_name: String,
    /// Where the standby connected from; `None` for a Unix-socket connection.
    pub client_addr: Option<IpAddr>,
    /// `startup`, `catchup`, `streaming`, `backup` or `stopping`.
    pub state: String,
    /// The last WAL position sent to the standby.
    pub sent_lsn: Option<String>,
    /// The last WAL position the standby reported replayed.
    pub replay_lsn: Option<String>,
    /// The standby's replay lag, once it has reported one.
    pub replay_lag: Option<Duration>,
}

impl fmt::Display for ReplicationRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let client = self
            .client_addr
            .map_or_else(|| "local".to_string(), |a| a.to_string());
        write!(
            f,
            "{} from {client}: {} sent={} replayed={} lag={}",
            self.application_name,
            self.state,
            self.sent_lsn.as_deref().unwrap_or("-"),
            self.replay_lsn.as_deref().unwrap_or("-"),
            self.replay_lag
                .map_or_else(|| "-".to_string(), |d| format!("{d:.3?}")),
        )
    }
}

/// A PostgreSQL server running inside a network namespace, stopped on drop.
#[derive(Debug)]
pub struct Postgres {
    name: String,
    netns: String,
    listen: IpAddr,
    bin: PathBuf,
    data_dir: PathBuf,
    log: PathBuf,
    server: ChildGuard,
}

impl Postgres {
    /// `initdb`s a primary in a fresh data dir under `scratch` and starts it
    /// listening on `listen` (an address inside `ns`) port [`PORT`], ready to
    /// serve standbys: `wal_level=replica`, a [`REPLICATION_ROLE`] role, and
    /// password-less trust authentication from anywhere.
    ///
    /// `scratch` is made traversable (o+x) by the `postgres` user if it is not.
    pub fn start_primary(
        ns: &Netns,
        listen: IpAddr,
        scratch: &Path,
    ) -> Result<Postgres, HarnessError> {
        let bin = postgres_bin_dir()?;
        let user = os_user()?;
        let (name, dir, log) = instance_dir(ns, "primary", scratch, &user)?;
        let data_dir = dir.join("data");

        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .arg("--pgdata")
            .arg(&data_dir)
            .args([
                "--username=postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .current_dir(&dir);
        run_as_postgres(ns, &mut initdb, &log, INITDB_TIMEOUT, "initdb")?;
        // Truncating the existing file keeps its owner (postgres).
        fs::write(data_dir.join("pg_hba.conf"), PG_HBA).map_err(io_context(format!(
            "write {}",
            data_dir.join("pg_hba.conf").display()
        )))?;

        let pg = Postgres::launch(ns, name, listen, bin, dir, data_dir, log)?;
        pg.sql(&format!(
            "CREATE ROLE {REPLICATION_ROLE} WITH LOGIN REPLICATION"
        ))?;
        Ok(pg)
    }

    /// Takes a base backup of the primary at `primary_host` — an address,
    /// `host:port` or `[v6]:port`, reached over the network from inside `ns`,
    /// so this is what crosses the tunnel — with `-R` (standby.signal and
    /// `primary_conninfo`), then starts it as a hot standby listening on
    /// `listen` port [`PORT`].
    pub fn start_replica(
        ns: &Netns,
        listen: IpAddr,
        primary_host: &str,
        scratch: &Path,
    ) -> Result<Postgres, HarnessError> {
        let (host, port) = parse_host_port(primary_host)?;
        let bin = postgres_bin_dir()?;
        let user = os_user()?;
        let (name, dir, log) = instance_dir(ns, "replica", scratch, &user)?;
        let data_dir = dir.join("data");

        // `-R` writes this connection string, application_name included, into
        // primary_conninfo, so the primary's pg_stat_replication names us.
        let conninfo = format!(
            "host={host} port={port} user={REPLICATION_ROLE} application_name={name} \
             connect_timeout={CONNECT_TIMEOUT_SECS}"
        );
        let mut backup = Command::new(bin.join("pg_basebackup"));
        backup
            .arg("--pgdata")
            .arg(&data_dir)
            .arg(format!("--dbname={conninfo}"))
            .args([
                "--write-recovery-conf",
                "--wal-method=stream",
                "--checkpoint=fast",
                "--no-sync",
                "--no-password",
            ])
            .current_dir(&dir);
        run_as_postgres(
            ns,
            &mut backup,
            &log,
            BASEBACKUP_TIMEOUT,
            &format!("pg_basebackup from {host}:{port}"),
        )?;

        Postgres::launch(ns, name, listen, bin, dir, data_dir, log)
    }

    /// Starts the postmaster on a prepared data dir and waits until it accepts connections.
    fn launch(
        ns: &Netns,
        name: String,
        listen: IpAddr,
        bin: PathBuf,
        dir: PathBuf,
        data_dir: PathBuf,
        log: PathBuf,
    ) -> Result<Postgres, HarnessError> {
        let settings = [
            format!("listen_addresses={listen}"),
            format!("port={PORT}"),
            // Not the data dir: a base backup would copy the socket's lock file.
            format!("unix_socket_directories={}", dir.display()),
            "wal_level=replica".into(),
            "max_wal_senders=10".into(),
            "max_replication_slots=10".into(),
            "wal_keep_size=128MB".into(),
            "hot_standby=on".into(),
            "max_connections=30".into(),
            "shared_buffers=16MB".into(),
            "fsync=off".into(),
            "full_page_writes=off".into(),
            // Standbys report promptly, so lag and replay positions are fresh.
            "wal_receiver_status_interval=1s".into(),
            "wal_retrieve_retry_interval=1s".into(),
            // A vanished peer is noticed in seconds, not the default minute.
            "wal_sender_timeout=10s".into(),
            "wal_receiver_timeout=10s".into(),
            "logging_collector=off".into(),
            "log_line_prefix=%m [%p] %b ".into(),
            "log_replication_commands=on".into(),
            format!("cluster_name={name}"),
        ];
        let mut postgres = Command::new(bin.join("postgres"));
        postgres.arg("-D").arg(&data_dir).current_dir(&dir);
        for setting in &settings {
            postgres.arg("-c").arg(setting);
        }
        let server = ns
            .spawn_logged(&mut as_postgres(&postgres), &log)
            .map_err(io_context(format!("start postgres {name}")))?;
        let mut pg = Postgres {
            name,
            netns: ns.name().to_string(),
            listen,
            bin,
            data_dir,
            log,
            server,
        };
        pg.wait_ready(STARTUP_TIMEOUT)?;
        Ok(pg)
    }

    /// Waits until the server accepts connections on its listen address, failing early if it exits.
    fn wait_ready(&mut self, timeout: Duration) -> Result<(), HarnessError> {
        let what = format!(
            "postgres {} to accept connections on {}:{PORT}",
            self.name, self.listen
        );
        let mut isready = self.client_command(&self.bin.join("pg_isready"));
        isready.args(["-d", "postgres", "-t", &CONNECT_TIMEOUT_SECS.to_string()]);
        let server = &mut self.server;
        let result = wait_until_ok(&what, timeout, || {
            if let Ok(Some(status)) = server.try_status() {
                return Ok(Err(format!("the postmaster exited ({status})")));
            }
            let out = isready
                .output()
                .map_err(|e| format!("run pg_isready: {e}"))?;
            if out.status.success() {
                Ok(Ok(()))
            } else {
                Err(String::from_utf8_lossy(&out.stdout).trim().to_string())
            }
        });
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(exited)) => Err(HarnessError::Command {
                command: self.server.label().to_string(),
                status: exited,
                stderr: self.log_tail(20),
            }),
            Err(mut e) => {
                e.last_observation = Some(format!(
                    "{}; log tail:\n{}",
                    e.last_observation.unwrap_or_default(),
                    self.log_tail(20)
                ));
                Err(e.into())
            }
        }
    }

    /// Runs `sql` through `psql` over TCP to this server's listen address from
    /// inside its namespace, as the `postgres` superuser; stdout, trimmed
    /// (unaligned, tuples only: one row a line, columns separated by `|`).
    pub fn sql(&self, sql: &str) -> Result<String, HarnessError> {
        self.psql(sql, None)
    }

    fn psql(&self, sql: &str, field_sep: Option<&str>) -> Result<String, HarnessError> {
        let mut cmd = self.client_command(&self.bin.join("psql"));
        cmd.args([
            "--no-psqlrc",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            "postgres",
        ]);
        if let Some(sep) = field_sep {
            cmd.arg("-F").arg(sep);
        }
        cmd.arg("-c").arg(sql);
        let out = run_ok(&mut cmd).map_err(|e| self.annotate(e, sql))?;
        Ok(out.trim().to_string())
    }

    /// A client command (`psql`, `pg_isready`) run as root inside the
    /// namespace, hard-bounded by `timeout(1)`, connecting to this server.
    fn client_command(&self, program: &Path) -> Command {
        self.client_command_within(program, CLIENT_TIMEOUT)
    }

    /// Like [`Postgres::client_command`], hard-bounded by `timeout` instead.
    fn client_command_within(&self, program: &Path, timeout: Duration) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.netns, "timeout", "--kill-after=5"])
            .arg(format!("{}s", timeout.as_secs()))
            .arg(program)
            .args(["-h", &self.listen.to_string(), "-p", &PORT.to_string()])
            .args(["-U", "postgres"])
            .env("PGCONNECT_TIMEOUT", CONNECT_TIMEOUT_SECS.to_string())
            .env("PGAPPNAME", "causeway-tests")
            .env_remove("PGPASSWORD")
            .env_remove("PGSERVICE")
            .env_remove("PGOPTIONS")
            .env_remove("PGDATABASE")
            .stdin(std::process::Stdio::null());
        cmd
    }

    fn annotate(&self, e: io::Error, sql: &str) -> HarnessError {
        match HarnessError::from(e) {
            HarnessError::Command {
                command: _,
                status,
                stderr,
            } => HarnessError::Command {
                command: format!("psql on {} ({}) running {sql:?}", self.name, self.listen),
                status,
                stderr,
            },
            other => other,
        }
    }

    /// The rows of `pg_stat_replication` on this (primary) server, for display and assertions.
    pub fn replication_status(&self) -> Result<Vec<ReplicationRow>, HarnessError> {
        let out = self.psql(
            "SELECT coalesce(application_name, ''), coalesce(host(client_addr), ''), \
                    coalesce(state, ''), coalesce(sent_lsn::text, ''), \
                    coalesce(replay_lsn::text, ''), \
                    coalesce(extract(epoch FROM replay_lag)::text, '') \
             FROM pg_stat_replication ORDER BY pid",
            Some(FIELD_SEP),
        )?;
        out.lines()
            .filter(|l| !l.is_empty())
            .map(|line| parse_replication_row(line).map_err(|why| self.bad_output(&why, line)))
            .collect()
    }

    /// Makes `standby` this primary's synchronous standby (`synchronous_standby_names`, with
    /// `synchronous_commit` on, the default): from then on a commit returns only once the
    /// standby has flushed it. Waits until the primary reports it as `sync`.
    pub fn require_synchronous_standby(
        &self,
        standby: &Postgres,
        timeout: Duration,
    ) -> Result<(), HarnessError> {
        let name = standby.name();
        self.sql(&format!(
            "ALTER SYSTEM SET synchronous_standby_names = '\"{name}\"'"
        ))?;
        self.sql("ALTER SYSTEM SET synchronous_commit = 'on'")?;
        self.sql("SELECT pg_reload_conf()")?;
        let what = format!("standby {name} to be {}'s synchronous standby", self.name);
        wait_until_ok(&what, timeout, || {
            let state = self
                .sql(&format!(
                    "SELECT coalesce(string_agg(sync_state, ','), 'not connected') \
                     FROM pg_stat_replication WHERE application_name = '{name}'"
                ))
                .map_err(|e| e.to_string())?;
            match state.as_str() {
                "sync" => Ok(()),
                other => Err(format!("sync_state {other}")),
            }
        })?;
        Ok(())
    }

    /// On a primary: the walsender serving `standby` as `pid@backend_start`, which changes
    /// whenever the standby reconnects; `None` while it is not connected.
    pub fn replication_session(&self, standby: &Postgres) -> Result<Option<String>, HarnessError> {
        let out = self.sql(&format!(
            "SELECT pid || '@' || backend_start FROM pg_stat_replication \
             WHERE application_name = '{}'",
            standby.name()
        ))?;
        Ok((!out.is_empty()).then_some(out))
    }

    /// Starts a continuous write load on this server: one `psql` session inserting rows
    /// `1, 2, …` into `table` (column `id`), one transaction per row, each only after the
    /// previous one was acknowledged; every acknowledged id is recorded.
    pub fn start_write_load(&self, table: &str) -> Result<WriteLoad, HarnessError> {
        if !is_identifier(table) {
            return Err(HarnessError::Topology(format!(
                "{table:?} is not a plain (optionally schema-qualified) table name"
            )));
        }
        let bound = WriteLoad::MAX_TIME + WriteLoad::COMMIT_TIMEOUT;
        let mut cmd = self.client_command_within(&self.bin.join("psql"), bound);
        // Quiet: only the returned ids are printed, not the command tags.
        cmd.args(["--no-psqlrc", "-Atq", "-d", "postgres"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null());
        WriteLoad::start(cmd, table.to_string())
    }

    /// On a primary the current WAL write position; on a standby the last replayed one.
    pub fn current_lsn(&self) -> Result<String, HarnessError> {
        self.lsn_query(
            "SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() \
                         ELSE pg_current_wal_lsn() END",
        )
    }

    /// On a standby: the last WAL position replayed. Errors on a primary.
    pub fn replay_lsn(&self) -> Result<String, HarnessError> {
        self.lsn_query("SELECT pg_last_wal_replay_lsn()")
    }

    fn lsn_query(&self, query: &str) -> Result<String, HarnessError> {
        let lsn = self.sql(query)?;
        if is_lsn(&lsn) {
            Ok(lsn)
        } else {
            Err(self.bad_output("no WAL position (is this the right kind of server?)", &lsn))
        }
    }

    /// On a standby: `now() - pg_last_xact_replay_timestamp()`, in seconds;
    /// `None` before any transaction has been replayed. On an idle primary
    /// this grows even though nothing is missing, so use it for display.
    pub fn replay_lag_seconds(&self) -> Result<Option<f64>, HarnessError> {
        let out = self.sql(
            "SELECT coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp())::text, '')",
        )?;
        if out.is_empty() {
            return Ok(None);
        }
        out.parse()
            .map(Some)
            .map_err(|_| self.bad_output("replay lag is not a number", &out))
    }

    /// Whether the server is a standby (still in recovery).
    pub fn is_in_recovery(&self) -> Result<bool, HarnessError> {
        match self.sql("SELECT pg_is_in_recovery()")?.as_str() {
            "t" => Ok(true),
            "f" => Ok(false),
            other => Err(self.bad_output("pg_is_in_recovery() is not a boolean", other)),
        }
    }

    /// Waits until this standby has replayed WAL at least up to `lsn`.
    pub fn wait_replayed(&self, lsn: &str, timeout: Duration) -> Result<(), HarnessError> {
        if !is_lsn(lsn) {
            return Err(HarnessError::Topology(format!(
                "{lsn:?} is not a WAL position (like 0/3000148)"
            )));
        }
        let what = format!(
            "standby {} ({}) to replay WAL up to {lsn}",
            self.name, self.listen
        );
        let query = format!(
            "SELECT pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '{lsn}') >= 0, \
                    coalesce(pg_last_wal_replay_lsn()::text, 'nothing')"
        );
        wait_until_ok(&what, timeout, || {
            let out = self
                .psql(&query, Some(FIELD_SEP))
                .map_err(|e| e.to_string())?;
            match out.split_once(FIELD_SEP) {
                Some(("t", _)) => Ok(()),
                Some((_, replayed)) => Err(format!("replayed up to {replayed}")),
                None => Err(format!("unexpected answer {out:?}")),
            }
        })
        .map_err(|mut e| {
            e.last_observation = Some(format!(
                "{}; log tail:\n{}",
                e.last_observation.unwrap_or_default(),
                self.log_tail(10)
            ));
            e.into()
        })
    }

    /// md5 over a table's rows in `id` order (`md5(string_agg(t::text, ',' ORDER BY id))`);
    /// empty for an empty table.
    pub fn table_checksum(&self, table: &str) -> Result<String, HarnessError> {
        if !is_identifier(table) {
            return Err(HarnessError::Topology(format!(
                "{table:?} is not a plain (optionally schema-qualified) table name"
            )));
        }
        self.sql(&format!(
            "SELECT coalesce(md5(string_agg(t::text, ',' ORDER BY id)), '') FROM {table} t"
        ))
    }

    /// Promotes a standby to primary and waits (up to 60 s, server-side) until it is one.
    pub fn promote(&self) -> Result<(), HarnessError> {
        match self.sql("SELECT pg_promote(true, 60)")?.as_str() {
            "t" => Ok(()),
            other => Err(self.bad_output("pg_promote did not finish", other)),
        }
    }

    /// Stops the server with a fast shutdown (SIGINT), escalating if it does not finish in time.
    pub fn stop(&mut self) -> Result<(), HarnessError> {
        self.shutdown();
        match self.server.try_status()? {
            Some(_) => Ok(()),
            None => Err(HarnessError::Command {
                command: format!("stop {}", self.server.label()),
                status: "still running".into(),
                stderr: self.log_tail(20),
            }),
        }
    }

    /// Stops the server and starts it again on the same data directory listening on
    /// `listen`, another address of its namespace: a database pod that moved to a new IP.
    pub fn move_to(mut self, ns: &Netns, listen: IpAddr) -> Result<Postgres, HarnessError> {
        self.stop()?;
        let dir = self
            .data_dir
            .parent()
            .map(Path::to_path_buf)
            .ok_or_else(|| {
                HarnessError::Topology(format!("{} has no parent", self.data_dir.display()))
            })?;
        Postgres::launch(
            ns,
            self.name.clone(),
            listen,
            self.bin.clone(),
            dir,
            self.data_dir.clone(),
            self.log.clone(),
        )
    }

    /// Kills the postmaster with SIGKILL, as a crash or a lost node would.
    pub fn crash(&mut self) -> Result<(), HarnessError> {
        self.server.kill9()?;
        Ok(())
    }

    /// The address the server listens on (port [`PORT`]).
    pub fn listen(&self) -> IpAddr {
        self.listen
    }

    /// `listen:port`, bracketed for IPv6, as [`Postgres::start_replica`] accepts it.
    pub fn host_port(&self) -> String {
        match self.listen {
            IpAddr::V4(ip) => format!("{ip}:{PORT}"),
            IpAddr::V6(ip) => format!("[{ip}]:{PORT}"),
        }
    }

    /// The instance's name, also its `cluster_name` and, for standbys, `application_name`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The data directory (owned by the `postgres` user).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The postmaster's PID.
    pub fn pid(&self) -> u32 {
        self.server.pid()
    }

    /// Where the server's output (and its `initdb` or `pg_basebackup` run) is logged.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last `n` lines of the server's log.
    pub fn log_tail(&self, n: usize) -> String {
        self.server.log_tail(n)
    }

    fn bad_output(&self, why: &str, output: &str) -> HarnessError {
        HarnessError::Command {
            command: format!("query on {} ({})", self.name, self.listen),
            status: why.to_string(),
            stderr: format!("unexpected output {output:?}"),
        }
    }

    /// Fast shutdown, then immediate shutdown; each bounded. The ChildGuard's
    /// own drop (SIGTERM, then SIGKILL) is the last resort.
    fn shutdown(&mut self) {
        for (signal, grace) in [
            (Signal::SIGINT, FAST_SHUTDOWN_GRACE),
            (Signal::SIGQUIT, IMMEDIATE_SHUTDOWN_GRACE),
        ] {
            // Only signal an un-reaped child, so the PID cannot have been reused.
            if !self.server.is_running() {
                return;
            }
            if let Ok(pid) = i32::try_from(self.server.pid()) {
                let _ = kill(Pid::from_raw(pid), signal);
            }
            let deadline = Instant::now() + grace;
            let mut pause = POLL_MIN;
            while self.server.is_running() {
                let now = Instant::now();
                if now >= deadline {
                    eprintln!(
                        "causeway-tests: postgres {} (pid {}) did not stop within {grace:?} of {signal}",
                        self.name,
                        self.server.pid()
                    );
                    break;
                }
                std::thread::sleep(pause.min(deadline - now));
                pause = (pause * 2).min(POLL_MAX);
            }
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A continuous write load (see [`Postgres::start_write_load`]): bounded by
/// [`WriteLoad::MAX_ROWS`] and [`WriteLoad::MAX_TIME`], at most one row per
/// [`WriteLoad::PACE`]; the `psql` session is killed when the load is dropped.
pub struct WriteLoad {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    acked: std::sync::Arc<std::sync::Mutex<Vec<u64>>>,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
}

impl WriteLoad {
    /// The most rows one load writes.
    pub const MAX_ROWS: u64 = 100_000;
    /// The longest one load runs.
    pub const MAX_TIME: Duration = Duration::from_secs(120);
    /// The shortest time between two inserts (spares a loaded machine).
    pub const PACE: Duration = Duration::from_millis(5);
    /// The longest one commit may take before the load counts as broken.
    pub const COMMIT_TIMEOUT: Duration = Duration::from_secs(30);

    fn start(mut cmd: Command, table: String) -> Result<WriteLoad, HarnessError> {
        use std::io::{BufRead, Write};
        let mut child = cmd
            .spawn()
            .map_err(io_context("start the write load's psql"))?;
        let mut stdin = child
            .stdin
            .take()
            .ok_or_else(|| HarnessError::Topology("psql of the write load has no stdin".into()))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| HarnessError::Topology("psql of the write load has no stdout".into()))?;
        let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines_tx.send(line).is_err() {
                    return;
                }
            }
        });
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (s, a) = (std::sync::Arc::clone(&stop), std::sync::Arc::clone(&acked));
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            let result = (|| {
                for id in 1..=Self::MAX_ROWS {
                    if s.load(Ordering::Relaxed) || started.elapsed() >= Self::MAX_TIME {
                        break;
                    }
                    let sent = Instant::now();
                    writeln!(
                        stdin,
                        "INSERT INTO {table} (id) VALUES ({id}) RETURNING id;"
                    )
                    .and_then(|()| stdin.flush())
                    .map_err(|e| format!("write insert {id}: {e}"))?;
                    // psql prints the returned id once the commit is acknowledged.
                    let line = lines.recv_timeout(Self::COMMIT_TIMEOUT).map_err(|_| {
                        format!(
                            "insert {id} not acknowledged within {:?}",
                            Self::COMMIT_TIMEOUT
                        )
                    })?;
                    match line.trim().parse::<u64>() {
                        Ok(got) if got == id => a.lock().map_err(|_| "poisoned")?.push(id),
                        _ => return Err(format!("insert {id}: psql said {line:?}")),
                    }
                    if let Some(rest) = Self::PACE.checked_sub(sent.elapsed()) {
                        std::thread::sleep(rest);
                    }
                }
                Ok(())
            })();
            drop(stdin);
            // psql ends with its stdin; the guard against a hang is the kill below.
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return result;
                }
                std::thread::sleep(POLL_MIN);
            }
            let _ = child.kill();
            let _ = child.wait();
            result
        });
        Ok(WriteLoad {
            stop,
            acked,
            thread: Some(thread),
        })
    }

    /// Rows acknowledged so far.
    pub fn acknowledged(&self) -> usize {
        self.acked.lock().map_or(0, |a| a.len())
    }

    /// Whether the load has ended (broken, or at a bound).
    pub fn ended(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Stops the load; every acknowledged id, or why the load broke (with what was acknowledged).
    pub fn finish(mut self) -> (Vec<u64>, Result<(), String>) {
        self.stop.store(true, Ordering::Relaxed);
        let result = match self.thread.take() {
            Some(t) => t
                .join()
                .unwrap_or_else(|_| Err("write load panicked".into())),
            None => Err("write load already finished".into()),
        };
        let acked = self.acked.lock().map(|a| a.clone()).unwrap_or_default();
        (acked, result)
    }
}

impl Drop for WriteLoad {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The `postgres` OS user, which must exist.
fn os_user() -> Result<User, HarnessError> {
    match User::from_name(OS_USER) {
        Ok(Some(user)) => Ok(user),
        Ok(None) => Err(HarnessError::Io {
            context: format!(
                "no `{OS_USER}` OS user; install Debian's postgresql package (apt-get install postgresql)"
            ),
            source: io::Error::from(io::ErrorKind::NotFound),
        }),
        Err(e) => Err(HarnessError::Io {
            context: format!("look up OS user `{OS_USER}`"),
            source: e.into(),
        }),
    }
}

/// Creates `scratch/pg-<n>-<role>` owned by postgres (mode 0700) and names its log file.
fn instance_dir(
    ns: &Netns,
    role: &str,
    scratch: &Path,
    user: &User,
) -> Result<(String, PathBuf, PathBuf), HarnessError> {
    ensure_traversable(scratch, user)?;
    let n = NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed);
    // Names become application_name, which must be a plain word in conninfo.
    let name = format!("pg{n}_{role}_{}", ns.name())
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect::<String>();
    let dir = scratch.join(format!("pg-{n}-{role}"));
    fs::create_dir(&dir).map_err(io_context(format!("create {}", dir.display())))?;
    chown(&dir, Some(user.uid), Some(user.gid))
        .map_err(|e| io_context(format!("chown {} to {OS_USER}", dir.display()))(e.into()))?;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
        .map_err(io_context(format!("chmod 0700 {}", dir.display())))?;
    let log = scratch.join(format!("pg-{n}-{role}.log"));
    Ok((name, dir, log))
}

/// Makes `scratch` searchable by the postgres user and checks that its ancestors are.
fn ensure_traversable(scratch: &Path, user: &User) -> Result<(), HarnessError> {
    let scratch = scratch
        .canonicalize()
        .map_err(io_context(format!("resolve {}", scratch.display())))?;
    let meta = fs::metadata(&scratch).map_err(io_context(format!("stat {}", scratch.display())))?;
    if !searchable_by(&meta, user) {
        let mode = meta.permissions().mode() | 0o001;
        fs::set_permissions(&scratch, fs::Permissions::from_mode(mode))
            .map_err(io_context(format!("chmod o+x {}", scratch.display())))?;
    }
    for dir in scratch.ancestors().skip(1) {
        let meta = fs::metadata(dir).map_err(io_context(format!("stat {}", dir.display())))?;
        if !searchable_by(&meta, user) {
            return Err(HarnessError::Io {
                context: format!(
                    "{} is not searchable by the `{OS_USER}` user, so it cannot reach its data \
                     dir under {}; use a scratch dir under /tmp",
                    dir.display(),
                    scratch.display()
                ),
                source: io::Error::from(io::ErrorKind::PermissionDenied),
            });
        }
    }
    Ok(())
}

fn searchable_by(meta: &fs::Metadata, user: &User) -> bool {
    let mode = meta.mode();
    if meta.uid() == user.uid.as_raw() {
        mode & 0o100 != 0
    } else if meta.gid() == user.gid.as_raw() {
        mode & 0o010 != 0
    } else {
        mode & 0o001 != 0
    }
}

/// Wraps `cmd` so it runs as the postgres OS user, exec'ing directly (no
/// lingering parent), so the spawned PID is the program's own.
fn as_postgres(cmd: &Command) -> Command {
    let mut setpriv = Command::new("setpriv");
    setpriv.args([
        &format!("--reuid={OS_USER}"),
        &format!("--regid={OS_USER}"),
        "--init-groups",
        "--reset-env",
        "--",
    ]);
    run_through(setpriv, cmd)
}

/// Runs a one-shot command as postgres inside `ns`, logging to `log`, bounded by `timeout`.
fn run_as_postgres(
    ns: &Netns,
    cmd: &mut Command,
    log: &Path,
    timeout: Duration,
    what: &str,
) -> Result<(), HarnessError> {
    let mut child = ns
        .spawn_logged(&mut as_postgres(cmd), log)
        .map_err(io_context(format!("start {what}")))?;
    // On timeout `child` is dropped, which kills it.
    let status = wait_until_ok(&format!("{what} to finish"), timeout, || {
        match child.try_status() {
            Ok(Some(status)) => Ok(status),
            Ok(None) => Err(String::new()),
            Err(e) => Err(e.to_string()),
        }
    })?;
    if status.success() {
        Ok(())
    } else {
        Err(HarnessError::Command {
            command: child.label().to_string(),
            status: status.to_string(),
            // The log is shared with the server; skip the command-line headers.
            stderr: child
                .log_tail(15)
                .lines()
                .filter(|l| !l.starts_with("# "))
                .collect::<Vec<_>>()
                .join("\n"),
        })
    }
}

/// Splits `addr`, `host:port` or `[v6]:port` into host and port ([`PORT`] if absent).
fn parse_host_port(s: &str) -> Result<(String, u16), HarnessError> {
    let bad = || HarnessError::Topology(format!("{s:?} is not an address, host:port or [v6]:port"));
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok((ip.to_string(), PORT));
    }
    if let Ok(sa) = s.parse::<std::net::SocketAddr>() {
        return Ok((sa.ip().to_string(), sa.port()));
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((host, port)) => (host, port.parse::<u16>().map_err(|_| bad())?),
        None => (s, PORT),
    };
    let plain = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if plain {
        Ok((host.to_string(), port))
    } else {
        Err(bad())
    }
}

fn is_lsn(s: &str) -> bool {
    match s.split_once('/') {
        Some((hi, lo)) => [hi, lo]
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 8 && p.bytes().all(|b| b.is_ascii_hexdigit())),
        None => false,
    }
}

fn is_identifier(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() <= 2
        && parts.iter().all(|p| {
            let mut bytes = p.bytes();
            bytes
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        })
}

fn parse_replication_row(line: &str) -> Result<ReplicationRow, String> {
    let fields: Vec<&str> = line.split(FIELD_SEP).collect();
    let [app, client, state, sent, replay, lag] = fields[..] else {
        return Err(format!("expected 6 fields, got {}", fields.len()));
    };
    let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let client_addr = match client {
        "" => None,
        c => Some(c.parse().map_err(|_| format!("bad client_addr {c:?}"))?),
    };
    let replay_lag = match lag {
        "" => None,
        l => {
            let secs: f64 = l.parse().map_err(|_| format!("bad replay_lag {l:?}"))?;
            Some(Duration::try_from_secs_f64(secs).map_err(|_| format!("bad replay_lag {l:?}"))?)
        }
    };
    Ok(ReplicationRow {
        application_name: app.to_string(),
        client_addr,
        state: state.to_string(),
        sent_lsn: opt(sent),
        replay_lsn: opt(replay),
        replay_lag,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_forms() {
        assert_eq!(
            parse_host_port("198.18.200.1").unwrap(),
            ("198.18.200.1".into(), 5432)
        );
        assert_eq!(
            parse_host_port("10.1.1.10:6543").unwrap(),
            ("10.1.1.10".into(), 6543)
        );
        assert_eq!(
            parse_host_port("fd00:1:1::10").unwrap(),
            ("fd00:1:1::10".into(), 5432)
        );
        assert_eq!(
            parse_host_port("[fd00::1]:7000").unwrap(),
            ("fd00::1".into(), 7000)
        );
        assert_eq!(
            parse_host_port("db.example:5433").unwrap(),
            ("db.example".into(), 5433)
        );
        assert!(parse_host_port("a b").is_err());
        assert!(parse_host_port("host:port").is_err());
        assert!(parse_host_port("").is_err());
    }

    #[test]
    fn lsns_and_identifiers_are_checked() {
        assert!(is_lsn("0/3000148"));
        assert!(is_lsn("1A/FF"));
        assert!(!is_lsn("0/"));
        assert!(!is_lsn("0/3'; DROP"));
        assert!(is_identifier("items"));
        assert!(is_identifier("public.items_2"));
        assert!(!is_identifier("1items"));
        assert!(!is_identifier("items; DROP TABLE x"));
        assert!(!is_identifier("a.b.c"));
    }

    #[test]
    fn replication_rows_parse() {
        let line = [
            "pg1_replica",
            "198.18.200.2",
            "streaming",
            "0/3000148",
            "0/3000148",
            "0.000731",
        ]
        .join(FIELD_SEP);
        let row = parse_replication_row(&line).unwrap();
        assert_eq!(row.client_addr, Some("198.18.200.2".parse().unwrap()));
        assert_eq!(row.state, "streaming");
        assert_eq!(row.replay_lag, Some(Duration::from_micros(731)));
        let line = ["s", "", "startup", "", "", ""].join(FIELD_SEP);
        let row = parse_replication_row(&line).unwrap();
        assert_eq!(row.client_addr, None);
        assert_eq!(row.replay_lsn, None);
        assert!(parse_replication_row("too|few").is_err());
    }
}
