//! End-to-end tests of issue #8 in Kubernetes mode: a gateway failover under 1 s with no
//! connection dropped, a graceful hand-over under 200 ms, zero lost transactions of a
//! synchronous PostgreSQL standby across a crash, a key rotation without a gap, and a
//! roaming gateway followed within 2 s. Each test fails when its figure is missed; the
//! scenarios themselves live in `causeway_tests::resilience` (shared with the
//! `causeway-resilience` report), and each prints what it measured.

use causeway_tests::resilience::{self, Figure};

fn assert_figure(figure: Figure) {
    eprintln!("{}\n{figure}", resilience::table_header());
    if let Err(missed) = figure.check() {
        panic!("{missed}");
    }
}

fn run(scenario: resilience::Scenario) {
    match scenario() {
        Ok(figure) => assert_figure(figure),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn a_crashed_gateway_is_replaced_within_a_second_without_dropping_a_connection() {
    run(resilience::gateway_crash);
}

#[test]
fn a_graceful_hand_over_gaps_under_200_ms() {
    run(resilience::graceful_handover);
}

#[test]
fn a_synchronous_standby_has_every_acknowledged_row_after_a_gateway_crash() {
    run(resilience::synchronous_standby_across_a_crash);
}

/// The zero-RPO check bites: with the standby left asynchronous, losing site A loses
/// acknowledged commits, and the same check must say so by counting rows.
#[test]
fn an_asynchronous_standby_fails_the_zero_rpo_check() {
    let figure = resilience::standby_across_a_crash(resilience::Replication::Asynchronous)
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("{}\n{figure}", resilience::table_header());
    let (acked, present) = figure.rows.expect("rows were written");
    assert!(
        acked > present,
        "an asynchronous standby kept all {acked} acknowledged rows: the scenario cuts the \
         standby off too late to tell synchronous from asynchronous ({})",
        figure.detail
    );
    assert!(figure.check().is_err(), "the check passed: {figure}");
}

#[test]
fn rotating_a_gateway_key_drops_nothing() {
    run(resilience::key_rotation);
}

#[test]
fn a_roaming_gateway_is_followed_within_two_seconds() {
    run(resilience::roaming);
}
