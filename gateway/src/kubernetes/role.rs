//! A gateway candidate's role as a pure state machine: [`step`] takes where the candidate
//! stands and what just happened, and returns where it stands next and what to do. The
//! async loop in [`super`] observes the world (the tunnel, the liveness answers, the Lease
//! manager), feeds events in, and only executes the actions that come out.
//!
//! The rules, in short: a passive candidate contends for the Lease only while no other
//! candidate answers "active", and takes it over at once when the active one goes quiet.
//! An active candidate steps down only when it sees another holding the Lease: a Lease it
//! merely cannot renew (the API server is away) is held over, since stepping down then
//! would cut every tunnel while nobody can take over.

/// Where a candidate stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Standing {
    /// Its tunnel is open and it carries its cluster's traffic.
    pub active: bool,
    /// It answers "active" to the other candidates' and the route agents' liveness probes.
    pub answering: bool,
    /// It contends for (or holds) the Lease through the Lease manager.
    pub contending: bool,
    /// Active although the Lease manager reports the Lease lost, because no other
    /// candidate is seen holding it.
    pub holding_over: bool,
}

/// What the liveness check saw, every few milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Heard {
    /// Another candidate answers "active".
    pub active_peer: bool,
    /// The active candidate went quiet (or stepped down) and nobody took its place.
    pub takeover_due: bool,
    /// No failed election call is waiting out its backoff.
    pub may_try: bool,
    /// This candidate has listened long enough to know who else is alive.
    pub listened_enough: bool,
    /// This candidate's own datapath stopped.
    pub datapath_failed: bool,
}

/// Who holds the Lease, as read after the Lease manager reported it lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// Another candidate, by name.
    Other(String),
    /// Nobody (or this candidate itself).
    Nobody,
    /// The API server could not be asked; the error.
    Unknown(String),
}

/// What happens to a candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The Lease manager says this candidate holds the Lease.
    LeaseWon,
    /// The Lease manager says this candidate lost the Lease.
    LeaseLost,
    /// The periodic look at the Lease while holding over.
    HoldoverTick,
    /// The Lease's holder, read after [`Action::AskHolder`].
    HolderIs(Holder),
    /// The liveness check.
    Check(Heard),
    /// [`Action::TakeOver`] wrote the Lease.
    TookOver {
        /// Whether the election could be joined afterwards (the Lease manager renews).
        joined: bool,
        /// Whether the Lease manager confirmed the hold in time.
        confirmed: bool,
    },
    /// The process is stopping.
    Shutdown,
}

/// What the loop does, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Open the tunnel, switch to its routes, set peers, then answer "active".
    OpenTunnel,
    /// Stop answering "active", close the tunnel, route through the active gateway.
    CloseTunnel,
    /// Stop answering "active" (the tunnel stays until another candidate takes over).
    StopAnswering,
    /// Read who holds the Lease; answers with [`Event::HolderIs`].
    AskHolder,
    /// Write the Lease over to this candidate and join the election; answers with
    /// [`Event::TookOver`] (or nothing, when the write was refused).
    TakeOver,
    /// Join the election (the Lease manager campaigns from here on).
    JoinElection,
    /// Leave the election, releasing the Lease if held.
    Resign,
    /// The tunnel carries on without a renewable Lease; say why once.
    HoldOver(Holder),
    /// Keep forwarding until another candidate answers "active" (bounded).
    Drain,
    /// Withdraw routes and the tunnel interface.
    Withdraw,
    /// Say "passive" in the Gateway's status.
    WritePassiveStatus,
}

/// Where the candidate stands after `event`, and what to do about it.
pub fn step(now: Standing, event: Event) -> (Standing, Vec<Action>) {
    let mut next = now;
    let actions = match event {
        Event::LeaseWon if now.active => {
            // The Lease is ours again after holding over; the tunnel never stopped.
            next.holding_over = false;
            vec![]
        }
        Event::LeaseWon => {
            next.active = true;
            next.answering = true;
            vec![Action::OpenTunnel]
        }
        Event::LeaseLost if now.active => vec![Action::AskHolder],
        Event::HoldoverTick if now.active && now.holding_over => vec![Action::AskHolder],
        Event::LeaseLost | Event::HoldoverTick => vec![],
        Event::HolderIs(Holder::Other(_)) if now.active => {
            next.active = false;
            next.answering = false;
            next.holding_over = false;
            vec![Action::CloseTunnel]
        }
        Event::HolderIs(Holder::Other(_)) => {
            next.holding_over = false;
            vec![]
        }
        Event::HolderIs(holder) if now.active => {
            next.holding_over = true;
            if now.holding_over {
                vec![]
            } else {
                vec![Action::HoldOver(holder)]
            }
        }
        Event::HolderIs(_) => vec![],
        Event::Check(heard) if now.active => {
            if heard.datapath_failed && now.answering {
                // A standby takes over within the liveness timeout instead of after the
                // kubelet's restart, and the Lease moves to it.
                next.answering = false;
                vec![Action::StopAnswering]
            } else {
                vec![]
            }
        }
        Event::Check(heard) => {
            if !heard.active_peer && heard.may_try && heard.takeover_due {
                // A campaign waiting for the old Lease to expire goes first; it releases
                // nothing it does not hold.
                next.contending = false;
                if now.contending {
                    vec![Action::Resign, Action::TakeOver]
                } else {
                    vec![Action::TakeOver]
                }
            } else if heard.active_peer && now.contending {
                next.contending = false;
                vec![Action::Resign]
            } else if !heard.active_peer
                && !now.contending
                && heard.listened_enough
                && heard.may_try
            {
                next.contending = true;
                vec![Action::JoinElection]
            } else {
                vec![]
            }
        }
        Event::TookOver { joined, confirmed } => {
            next.active = true;
            next.answering = true;
            next.contending = joined;
            // Without the manager's confirmation nothing renews the Lease yet: hold over.
            next.holding_over = !(joined && confirmed);
            if now.active {
                vec![]
            } else {
                vec![Action::OpenTunnel]
            }
        }
        Event::Shutdown => {
            // Resign first and only then say "not active": the standby takes the Lease
            // over when it hears that, and a release still in flight must not clear its
            // hold.
            let mut actions = Vec::new();
            if now.contending {
                actions.push(Action::Resign);
            }
            actions.push(Action::StopAnswering);
            if now.active {
                actions.push(Action::Drain);
            }
            actions.push(Action::Withdraw);
            if now.active {
                actions.push(Action::WritePassiveStatus);
            }
            next = Standing::default();
            actions
        }
    };
    (next, actions)
}

#[cfg(test)]
mod tests;
