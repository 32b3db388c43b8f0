//! Table-driven tests of [`step`]: standing and event in, standing and actions out.

use super::*;

const PASSIVE: Standing = Standing {
    active: false,
    answering: false,
    contending: false,
    holding_over: false,
};
const CONTENDING: Standing = Standing {
    contending: true,
    ..PASSIVE
};
const ACTIVE: Standing = Standing {
    active: true,
    answering: true,
    contending: true,
    holding_over: false,
};
const HOLDING_OVER: Standing = Standing {
    holding_over: true,
    ..ACTIVE
};
const SILENT: Standing = Standing {
    answering: false,
    ..ACTIVE
};

/// Nobody else active, nothing due, free to try, listened long enough.
const ALONE: Heard = Heard {
    active_peer: false,
    takeover_due: false,
    may_try: true,
    listened_enough: true,
    datapath_failed: false,
};

fn heard(change: impl FnOnce(&mut Heard)) -> Event {
    let mut h = ALONE;
    change(&mut h);
    Event::Check(h)
}

fn other() -> Holder {
    Holder::Other("gw-2".into())
}

#[test]
fn step_table() {
    use Action::*;
    let unknown = || Holder::Unknown("timeout".into());
    #[rustfmt::skip]
    let cases: Vec<(&str, Standing, Event, Standing, Vec<Action>)> = vec![
        // Election.
        ("alone after listening: join the election", PASSIVE, Event::Check(ALONE), CONTENDING, vec![JoinElection]),
        ("not listened long enough: wait", PASSIVE, heard(|h| h.listened_enough = false), PASSIVE, vec![]),
        ("a failed join waits out its backoff", PASSIVE, heard(|h| h.may_try = false), PASSIVE, vec![]),
        ("another is active: stay out", PASSIVE, heard(|h| h.active_peer = true), PASSIVE, vec![]),
        ("another became active: leave the election", CONTENDING, heard(|h| h.active_peer = true), PASSIVE, vec![Resign]),
        ("contending, nobody active: keep contending", CONTENDING, Event::Check(ALONE), CONTENDING, vec![]),
        ("the Lease manager says we won: open the tunnel", CONTENDING, Event::LeaseWon, ACTIVE, vec![OpenTunnel]),
        // Takeover.
        ("the active one went quiet: take over", PASSIVE, heard(|h| h.takeover_due = true), PASSIVE, vec![TakeOver]),
        ("a waiting campaign resigns before the takeover", CONTENDING, heard(|h| h.takeover_due = true), PASSIVE, vec![Resign, TakeOver]),
        ("a takeover waits out a refused write", PASSIVE, heard(|h| { h.takeover_due = true; h.may_try = false; }), PASSIVE, vec![]),
        ("no takeover while another answers active", PASSIVE, heard(|h| { h.takeover_due = true; h.active_peer = true; }), PASSIVE, vec![]),
        ("took over, confirmed", PASSIVE, Event::TookOver { joined: true, confirmed: true }, ACTIVE, vec![OpenTunnel]),
        ("took over, unconfirmed: hold over", PASSIVE, Event::TookOver { joined: true, confirmed: false }, HOLDING_OVER, vec![OpenTunnel]),
        ("took over, cannot join: hold over", PASSIVE, Event::TookOver { joined: false, confirmed: false }, Standing { contending: false, ..HOLDING_OVER }, vec![OpenTunnel]),
        // Losing the Lease.
        ("lost: ask who holds it", ACTIVE, Event::LeaseLost, ACTIVE, vec![AskHolder]),
        ("another holds it: step down", ACTIVE, Event::HolderIs(other()), CONTENDING, vec![CloseTunnel]),
        ("nobody holds it: hold over, say so once", ACTIVE, Event::HolderIs(Holder::Nobody), HOLDING_OVER, vec![HoldOver(Holder::Nobody)]),
        ("API server away: hold over", ACTIVE, Event::HolderIs(unknown()), HOLDING_OVER, vec![HoldOver(unknown())]),
        ("still nobody: hold over quietly", HOLDING_OVER, Event::HolderIs(Holder::Nobody), HOLDING_OVER, vec![]),
        ("holding over: look again", HOLDING_OVER, Event::HoldoverTick, HOLDING_OVER, vec![AskHolder]),
        ("not holding over: the tick does nothing", ACTIVE, Event::HoldoverTick, ACTIVE, vec![]),
        ("holding over, another took it: step down", HOLDING_OVER, Event::HolderIs(other()), CONTENDING, vec![CloseTunnel]),
        ("holding over, won again: the tunnel never stopped", HOLDING_OVER, Event::LeaseWon, ACTIVE, vec![]),
        ("a passive candidate ignores a late answer", PASSIVE, Event::HolderIs(other()), PASSIVE, vec![]),
        ("a passive candidate has no Lease to lose", PASSIVE, Event::LeaseLost, PASSIVE, vec![]),
        // The datapath.
        ("datapath stopped: stop answering active", ACTIVE, heard(|h| h.datapath_failed = true), SILENT, vec![StopAnswering]),
        ("already silent: nothing more", SILENT, heard(|h| h.datapath_failed = true), SILENT, vec![]),
        ("active and healthy: nothing", ACTIVE, heard(|h| h.active_peer = true), ACTIVE, vec![]),
        // Shutdown.
        ("active: resign, go quiet, drain, withdraw, say passive", ACTIVE, Event::Shutdown, PASSIVE, vec![Resign, StopAnswering, Drain, Withdraw, WritePassiveStatus]),
        ("holding over outside the election: no resign", Standing { contending: false, ..HOLDING_OVER }, Event::Shutdown, PASSIVE, vec![StopAnswering, Drain, Withdraw, WritePassiveStatus]),
        ("contending standby: resign, withdraw", CONTENDING, Event::Shutdown, PASSIVE, vec![Resign, StopAnswering, Withdraw]),
        ("passive standby: withdraw", PASSIVE, Event::Shutdown, PASSIVE, vec![StopAnswering, Withdraw]),
    ];
    for (name, now, event, want_next, want_actions) in cases {
        let (next, actions) = step(now, event.clone());
        assert_eq!(
            (next, &actions),
            (want_next, &want_actions),
            "{name}: {now:?} + {event:?}"
        );
    }
}

#[test]
fn a_takeover_and_a_step_down_round_trip() {
    // A standby hears the active one go quiet, takes over, later sees a newer holder
    // (a partition healed) and steps down.
    let (s, a) = step(PASSIVE, heard(|h| h.takeover_due = true));
    assert_eq!(a, vec![Action::TakeOver]);
    let took = Event::TookOver {
        joined: true,
        confirmed: true,
    };
    let (s, a) = step(s, took);
    assert_eq!((s, a), (ACTIVE, vec![Action::OpenTunnel]));
    let (s, a) = step(s, Event::LeaseLost);
    assert_eq!(a, vec![Action::AskHolder]);
    let (s, a) = step(s, Event::HolderIs(other()));
    assert_eq!(a, vec![Action::CloseTunnel]);
    assert!(!s.active && !s.answering && !s.holding_over);
}
