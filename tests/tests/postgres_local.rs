//! A PostgreSQL primary and hot standby in two namespaces joined by a plain
//! veth (no tunnel): streaming replication works, the data on both sides
//! matches, and the standby refuses writes. Needs root and Debian's
//! postgresql package.

use std::net::IpAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use causeway_tests::harness::netns::run_ok;
use causeway_tests::harness::postgres::{postgres_bin_dir, Postgres};
use causeway_tests::harness::{veth, wait_until_ok, Netns, ScratchDir};

const REPLAY_TIMEOUT: Duration = Duration::from_secs(30);
const ROWS: u32 = 1000;

fn must<T, E: std::fmt::Display>(what: &str, result: Result<T, E>) -> T {
    result.unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// Waits until `replica` has replayed everything `primary` has written so far
/// and returns both tables' checksums, asserting they match.
fn assert_in_sync(primary: &Postgres, replica: &Postgres, table: &str) -> String {
    let lsn = must("primary WAL position", primary.current_lsn());
    if let Err(e) = replica.wait_replayed(&lsn, REPLAY_TIMEOUT) {
        panic!(
            "{e}\nprimary log:\n{}\nreplica log:\n{}",
            primary.log_tail(20),
            replica.log_tail(20)
        );
    }
    let on_primary = must("checksum on primary", primary.table_checksum(table));
    let on_replica = must("checksum on replica", replica.table_checksum(table));
    assert_eq!(
        on_primary, on_replica,
        "checksum of {table} differs between primary and replica after replaying {lsn}"
    );
    assert_eq!(on_primary.len(), 32, "not an md5: {on_primary:?}");
    on_primary
}

/// Processes whose command line mentions `needle` (e.g. a data dir), as `pid cmdline`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| {
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline
                .contains(needle)
                .then(|| format!("{} {cmdline}", e.file_name().to_string_lossy()))
        })
        .collect()
}

#[test]
fn primary_streams_to_a_read_only_standby_over_a_veth() {
    let started = Instant::now();
    must("PostgreSQL binaries", postgres_bin_dir());

    // Declared first so they are dropped last: servers stop before their
    // namespaces go, and the scratch dir outlives both.
    let scratch = must("scratch dir", ScratchDir::new("cw-pg-local-"));
    let site_a = must("namespace a", Netns::new("pg-a"));
    let site_b = must("namespace b", Netns::new("pg-b"));
    let primary_ip: IpAddr = "198.18.200.1".parse().unwrap();
    let replica_ip: IpAddr = "198.18.200.2".parse().unwrap();
    must(
        "veth between the namespaces",
        veth(
            &site_a,
            "pg-a0",
            ["198.18.200.1/24".parse().unwrap()],
            &site_b,
            "pg-b0",
            ["198.18.200.2/24".parse().unwrap()],
        ),
    );

    let t = Instant::now();
    let primary = must(
        "start primary",
        Postgres::start_primary(&site_a, primary_ip, scratch.path()),
    );
    eprintln!(
        "primary {} up on {} in {:.2?}",
        primary.name(),
        primary.listen(),
        t.elapsed()
    );
    assert!(!must("primary recovery state", primary.is_in_recovery()));

    let t = Instant::now();
    let replica = must(
        "start replica",
        Postgres::start_replica(&site_b, replica_ip, &primary_ip.to_string(), scratch.path()),
    );
    eprintln!(
        "replica {} up on {} in {:.2?}",
        replica.name(),
        replica.listen(),
        t.elapsed()
    );
    assert!(must("replica recovery state", replica.is_in_recovery()));
    assert_eq!(replica.listen(), replica_ip);

    // The primary sees the standby streaming from the other namespace's address.
    let rows = must(
        "standby to stream",
        wait_until_ok("the standby to appear as streaming", REPLAY_TIMEOUT, || {
            let rows = primary.replication_status().map_err(|e| e.to_string())?;
            if rows
                .iter()
                .any(|r| r.state == "streaming" && r.client_addr == Some(replica_ip))
            {
                Ok(rows)
            } else {
                Err(format!("{rows:?}"))
            }
        }),
    );
    for row in &rows {
        eprintln!("pg_stat_replication: {row}");
    }
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].application_name, replica.name());

    // Insert, replicate, compare.
    let t = Instant::now();
    must(
        "create and fill table",
        primary.sql(&format!(
            "CREATE TABLE items (id integer PRIMARY KEY, name text NOT NULL, qty integer NOT NULL);
             INSERT INTO items SELECT g, 'item-' || g, g % 7 FROM generate_series(1, {ROWS}) g;"
        )),
    );
    let inserted = assert_in_sync(&primary, &replica, "items");
    eprintln!(
        "{ROWS} rows replicated in {:.2?}, checksum {inserted}",
        t.elapsed()
    );
    assert_eq!(
        must(
            "row count on replica",
            replica.sql("SELECT count(*) FROM items")
        ),
        ROWS.to_string()
    );
    eprintln!(
        "replica replay LSN {}, lag {:?} s",
        must("replay LSN", replica.replay_lsn()),
        must("replay lag", replica.replay_lag_seconds())
    );

    // Update and delete, then compare again: the checksum must move on both.
    let t = Instant::now();
    must(
        "update rows",
        primary.sql(
            "UPDATE items SET qty = qty * 10 + 1, name = name || '-v2' WHERE id % 3 = 0;
             DELETE FROM items WHERE id % 100 = 0;",
        ),
    );
    let updated = assert_in_sync(&primary, &replica, "items");
    eprintln!(
        "update replicated in {:.2?}, checksum {updated}",
        t.elapsed()
    );
    assert_ne!(inserted, updated, "the update did not change the checksum");
    assert_eq!(
        must(
            "updated row on replica",
            replica.sql("SELECT name, qty FROM items WHERE id = 3")
        ),
        "item-3-v2|31"
    );
    assert_eq!(
        must(
            "row count on replica",
            replica.sql("SELECT count(*) FROM items")
        ),
        (ROWS - ROWS / 100).to_string()
    );

    // The standby is read-only.
    let err = replica
        .sql("INSERT INTO items VALUES (100000, 'nope', 0)")
        .expect_err("an INSERT on a hot standby must fail");
    let text = err.to_string();
    assert!(
        text.contains("read-only transaction"),
        "unexpected error for a write on the standby: {text}"
    );
    eprintln!(
        "write on replica refused: {}",
        text.lines().last().unwrap_or(&text)
    );

    // Stop everything explicitly and prove nothing is left behind.
    let namespaces = [site_a.name().to_string(), site_b.name().to_string()];
    // Backends show their cluster_name (the instance name) in their title;
    // the postmasters show their data dir.
    let needles = [
        primary.name().to_string(),
        replica.name().to_string(),
        scratch.path().to_string_lossy().into_owned(),
    ];
    drop(replica);
    drop(primary);
    for needle in &needles {
        let leftovers = processes_mentioning(needle);
        assert!(
            leftovers.is_empty(),
            "processes left running: {leftovers:?}"
        );
    }
    for ns in [&site_a, &site_b] {
        let pids = must(
            "list namespace processes",
            run_ok(Command::new("ip").args(["netns", "pids", ns.name()])),
        );
        assert!(
            pids.trim().is_empty(),
            "{} still has processes: {pids}",
            ns.name()
        );
    }
    drop(site_b);
    drop(site_a);
    let left = must(
        "list namespaces",
        run_ok(Command::new("ip").args(["netns", "list"])),
    );
    for ns in &namespaces {
        assert!(
            !left.contains(ns.as_str()),
            "namespace {ns} left behind: {left}"
        );
    }
    eprintln!("total {:.2?}", started.elapsed());
}
