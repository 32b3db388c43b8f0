//! The links and addresses the gateway owns, and what it reads of the others.

use super::*;

impl Netlink {
    pub(super) async fn get_link(&self, ifindex: u32) -> Result<LinkMessage, NetlinkError> {
        let link = format!("ifindex {ifindex}");
        let result = self
            .handle
            .link()
            .get()
            .match_index(ifindex)
            .execute()
            .try_next()
            .await;
        match result {
            Ok(Some(msg)) => Ok(msg),
            Ok(None) => Err(NetlinkError::LinkNotFound { link }),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Err(NetlinkError::LinkNotFound { link }),
            Err(source) => Err(NetlinkError::Link {
                op: "reading",
                link,
                source,
            }),
        }
    }

    /// Index of the interface called `name`, or `None` if there is none.
    pub async fn link_index(&self, name: &str) -> Result<Option<u32>, NetlinkError> {
        let result = self
            .handle
            .link()
            .get()
            .match_name(name)
            .execute()
            .try_next()
            .await;
        match result {
            Ok(msg) => Ok(msg.map(|m| m.header.index)),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
            Err(source) => Err(NetlinkError::Link {
                op: "looking up",
                link: name.to_string(),
                source,
            }),
        }
    }

    /// MTU of the interface `ifindex`.
    pub async fn link_mtu(&self, ifindex: u32) -> Result<u32, NetlinkError> {
        let msg = self.get_link(ifindex).await?;
        link_mtu_attr(&msg).ok_or_else(|| NetlinkError::MissingMtu {
            link: link_name(&msg),
        })
    }

    /// Brings the interface up with `mtu`, writing only what differs; returns whether it wrote.
    pub async fn set_link_up_with_mtu(&self, ifindex: u32, mtu: u32) -> Result<bool, NetlinkError> {
        let msg = self.get_link(ifindex).await?;
        let is_up = msg.header.flags.contains(LinkFlags::Up);
        let mtu_matches = link_mtu_attr(&msg) == Some(mtu);
        if is_up && mtu_matches {
            return Ok(false);
        }
        let mut request = LinkUnspec::new_with_index(ifindex);
        if !mtu_matches {
            request = request.mtu(mtu);
        }
        if !is_up {
            request = request.up();
        }
        self.count_write();
        let link = link_name(&msg);
        self.handle
            .link()
            .set(request.build())
            .execute()
            .await
            .map_err(|source| NetlinkError::Link {
                op: "setting up",
                link: link.clone(),
                source,
            })?;
        tracing::info!(%link, mtu, "interface up with MTU");
        Ok(true)
    }

    /// Adds `addr` to the interface unless it is already there; returns whether it wrote.
    pub async fn add_address(&self, ifindex: u32, addr: IpNet) -> Result<bool, NetlinkError> {
        let link = format!("ifindex {ifindex}");
        let existing: Vec<_> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(ifindex)
            .set_address_filter(addr.addr())
            .set_prefix_length_filter(addr.prefix_len())
            .execute()
            .try_collect()
            .await
            .map_err(|source| NetlinkError::Address {
                op: "listing",
                addr: addr.to_string(),
                link: link.clone(),
                source,
            })?;
        if !existing.is_empty() {
            return Ok(false);
        }
        self.count_write();
        match self
            .handle
            .address()
            .add(ifindex, addr.addr(), addr.prefix_len())
            .execute()
            .await
        {
            Ok(()) => {
                tracing::info!(%link, %addr, "address added");
                Ok(true)
            }
            // Someone added it between our read and our write.
            Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(false),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Err(NetlinkError::LinkNotFound { link }),
            Err(source) => Err(NetlinkError::Address {
                op: "adding",
                addr: addr.to_string(),
                link,
                source,
            }),
        }
    }

    /// Index of the interface the main table's default route for the family leaves through.
    pub(super) async fn default_route_ifindex(
        &self,
        v6: bool,
    ) -> Result<Option<u32>, NetlinkError> {
        let routes = self.dump_routes(v6, MAIN_TABLE).await?;
        let best = routes
            .iter()
            .filter(|m| {
                m.header.destination_prefix_length == 0
                    && m.header.kind == RouteType::Unicast
                    && message_table(m) == MAIN_TABLE
            })
            .filter_map(|m| {
                let mut priority = 0;
                let mut oif = None;
                for attr in &m.attributes {
                    match attr {
                        RouteAttribute::Priority(p) => priority = *p,
                        RouteAttribute::Oif(i) => oif = Some(*i),
                        RouteAttribute::MultiPath(hops) if oif.is_none() => {
                            oif = hops.first().map(|h| h.interface_index)
                        }
                        _ => {}
                    }
                }
                oif.map(|oif| (priority, oif))
            })
            .min();
        Ok(best.map(|(_, oif)| oif))
    }

    /// MTU of the interface holding `addr`; for 0.0.0.0 or ::, of the default
    /// route's interface, else the smallest among up non-loopback interfaces.
    pub async fn underlay_mtu_for(&self, addr: IpAddr) -> Result<u32, NetlinkError> {
        if addr.is_unspecified() {
            if let Some(ifindex) = self.default_route_ifindex(addr.is_ipv6()).await? {
                return self.link_mtu(ifindex).await;
            }
            let links: Vec<LinkMessage> = self
                .handle
                .link()
                .get()
                .execute()
                .try_collect()
                .await
                .map_err(|source| NetlinkError::Link {
                    op: "listing",
                    link: "(all)".to_string(),
                    source,
                })?;
            return links
                .iter()
                .filter(|l| {
                    l.header.flags.contains(LinkFlags::Up)
                        && !l.header.flags.contains(LinkFlags::Loopback)
                })
                .filter_map(link_mtu_attr)
                .min()
                .ok_or(NetlinkError::NoUnderlay {
                    family: family_number(addr.is_ipv6()),
                });
        }
        let holders: Vec<_> = self
            .handle
            .address()
            .get()
            .set_address_filter(addr)
            .execute()
            .try_collect()
            .await
            .map_err(|source| NetlinkError::Address {
                op: "looking up",
                addr: addr.to_string(),
                link: "(any)".to_string(),
                source,
            })?;
        match holders.first() {
            Some(holder) => self.link_mtu(holder.header.index).await,
            None => Err(NetlinkError::AddressNotFound { addr }),
        }
    }

    /// Index of the interface whose subnet holds `neighbor`: where a route via it must leave.
    pub async fn ifindex_on_subnet(&self, neighbor: IpAddr) -> Result<u32, NetlinkError> {
        let addresses: Vec<_> = self
            .handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|source| NetlinkError::Address {
                op: "listing",
                addr: neighbor.to_string(),
                link: "(any)".to_string(),
                source,
            })?;
        addresses
            .iter()
            .filter_map(|msg| {
                msg.attributes.iter().find_map(|attr| match attr {
                    AddressAttribute::Address(ip) => IpNet::new(*ip, msg.header.prefix_len)
                        .ok()
                        .filter(|net| net.contains(&neighbor))
                        .map(|net| (net.prefix_len(), msg.header.index)),
                    _ => None,
                })
            })
            // The most specific subnet wins, as the kernel's own lookup would choose.
            .max()
            .map(|(_, index)| index)
            .ok_or(NetlinkError::NotOnSubnet { addr: neighbor })
    }

    /// Deletes the interface; returns false if it was already gone.
    pub async fn delete_link(&self, ifindex: u32) -> Result<bool, NetlinkError> {
        self.count_write();
        match self.handle.link().del(ifindex).execute().await {
            Ok(()) => {
                tracing::info!(ifindex, "interface deleted");
                Ok(true)
            }
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(false),
            Err(source) => Err(NetlinkError::Link {
                op: "deleting",
                link: format!("ifindex {ifindex}"),
                source,
            }),
        }
    }
}
