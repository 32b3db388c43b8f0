//! Reading and writing Causeway's routes.

use super::*;

/// Counts of the route changes an [`Netlink::apply`] made.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ApplyReport {
    /// Routes created.
    pub added: usize,
    /// Routes overwritten in place.
    pub replaced: usize,
    /// Routes removed (including ones already gone).
    pub deleted: usize,
    /// Changes the kernel refused.
    pub failed: usize,
}

impl ApplyReport {
    /// Number of changes that took effect.
    pub fn changed(&self) -> usize {
        self.added + self.replaced + self.deleted
    }
}

impl fmt::Display for ApplyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "added {}, replaced {}, deleted {}, failed {}",
            self.added, self.replaced, self.deleted, self.failed
        )
    }
}

/// Which kind of route change was attempted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteOp {
    /// Create a route that must not exist yet.
    Add,
    /// Overwrite a route in place.
    Replace,
    /// Remove a route.
    Delete,
}

impl fmt::Display for RouteOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RouteOp::Add => "add",
            RouteOp::Replace => "replace",
            RouteOp::Delete => "delete",
        })
    }
}

impl Netlink {
    pub(super) async fn dump_routes(
        &self,
        v6: bool,
        table: u32,
    ) -> Result<Vec<RouteMessage>, NetlinkError> {
        let request = if v6 {
            RouteMessageBuilder::<Ipv6Addr>::new().build()
        } else {
            RouteMessageBuilder::<Ipv4Addr>::new().build()
        };
        let result: Result<Vec<RouteMessage>, rtnetlink::Error> = self
            .handle
            .route()
            .get(request)
            .execute()
            .try_collect()
            .await;
        match result {
            Ok(messages) => Ok(messages),
            // A kernel without IPv6 has no IPv6 routes to own.
            Err(e) if v6 && matches!(errno(&e), Some(libc::EAFNOSUPPORT | libc::EOPNOTSUPP)) => {
                Ok(Vec::new())
            }
            Err(source) => Err(NetlinkError::ListRoutes {
                table,
                family: family_number(v6),
                source,
            }),
        }
    }

    /// IPv4 and IPv6 routes in `table` carrying [`ROUTE_PROTOCOL`].
    pub async fn list_owned_routes(&self, table: u32) -> Result<Vec<Route>, NetlinkError> {
        let table = effective_table(table);
        let mut routes = Vec::new();
        for v6 in [false, true] {
            // Filtered here rather than by the kernel: strict dump filtering
            // fails with ENOENT for a table that holds no routes yet.
            for msg in self.dump_routes(v6, table).await? {
                if u8::from(msg.header.protocol) != ROUTE_PROTOCOL
                    || !matches!(msg.header.kind, RouteType::Unicast | RouteType::Unreachable)
                    || message_table(&msg) != table
                {
                    continue;
                }
                match route_from_message(&msg) {
                    Some(route) => routes.push(route),
                    None => tracing::warn!(
                        ?msg,
                        "ignoring a route with protocol 203 that Causeway cannot model"
                    ),
                }
            }
        }
        Ok(routes)
    }

    pub(super) async fn write_route(&self, op: RouteOp, route: &Route) -> Result<(), RouteFailure> {
        let failure = |errno, message| RouteFailure {
            op,
            route: route.clone(),
            errno,
            message,
        };
        let message = route_message(route, op).map_err(|m| failure(None, m))?;
        self.count_write();
        let result = match op {
            RouteOp::Add => self.handle.route().add(message).execute().await,
            RouteOp::Replace => self.handle.route().add(message).replace().execute().await,
            RouteOp::Delete => self.handle.route().del(message).execute().await,
        };
        match result {
            Ok(()) => {
                tracing::debug!(%op, %route, "route changed");
                Ok(())
            }
            // Gone already is what a delete wants.
            Err(e) if op == RouteOp::Delete && errno(&e) == Some(libc::ESRCH) => {
                tracing::debug!(%route, "route already gone");
                Ok(())
            }
            Err(e) => Err(failure(errno(&e), describe(&e))),
        }
    }

    /// Carries out a plan: deletes, then replaces, then adds, continuing past
    /// individual failures and reporting them all at the end.
    pub async fn apply(&self, plan: &RoutePlan) -> Result<ApplyReport, NetlinkError> {
        let mut report = ApplyReport::default();
        let mut failures = Vec::new();
        // Deletes first so duplicates are gone before a replace picks one,
        // and so a prefix moving between tables never exists twice.
        let phases = [
            (RouteOp::Delete, &plan.delete),
            (RouteOp::Replace, &plan.replace),
            (RouteOp::Add, &plan.add),
        ];
        for (op, routes) in phases {
            let results: Vec<Result<(), RouteFailure>> = stream::iter(routes.iter())
                .map(|route| self.write_route(op, route))
                .buffer_unordered(PIPELINE_DEPTH)
                .collect()
                .await;
            for result in results {
                match result {
                    Ok(()) => match op {
                        RouteOp::Add => report.added += 1,
                        RouteOp::Replace => report.replaced += 1,
                        RouteOp::Delete => report.deleted += 1,
                    },
                    Err(failure) => failures.push(failure),
                }
            }
        }
        report.failed = failures.len();
        if report.changed() > 0 || report.failed > 0 {
            tracing::info!(
                added = report.added,
                replaced = report.replaced,
                deleted = report.deleted,
                failed = report.failed,
                "applied route plan"
            );
        }
        if failures.is_empty() {
            Ok(report)
        } else {
            // Sorted so the error reads the same however the pipeline finished.
            failures.sort_by(|a, b| {
                (a.route.table, a.route.dst, a.route.next_hop).cmp(&(
                    b.route.table,
                    b.route.dst,
                    b.route.next_hop,
                ))
            });
            Err(NetlinkError::Apply { report, failures })
        }
    }

    /// Makes `table` hold exactly `desired` among Causeway's routes; writes nothing when it already does.
    #[tracing::instrument(skip(self, desired), fields(desired = desired.len()))]
    pub async fn reconcile(
        &self,
        desired: &[Route],
        table: u32,
    ) -> Result<ApplyReport, NetlinkError> {
        let table = effective_table(table);
        // Routes for another table would never be observed here and would be
        // re-added on every pass.
        if let Some(route) = desired.iter().find(|r| effective_table(r.table) != table) {
            return Err(NetlinkError::TableMismatch {
                route: route.clone(),
                table,
            });
        }
        let observed = self.list_owned_routes(table).await?;
        let plan = plan_routes(desired, &observed);
        tracing::debug!(
            observed = observed.len(),
            add = plan.add.len(),
            replace = plan.replace.len(),
            delete = plan.delete.len(),
            "planned routes"
        );
        if plan.is_empty() {
            return Ok(ApplyReport::default());
        }
        self.apply(&plan).await
    }
}
