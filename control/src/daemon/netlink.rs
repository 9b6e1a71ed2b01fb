//! The few rtnetlink requests the daemon needs, synchronously: the uplink's
//! MAC and MTU, the route toward a tunnel's remote, the neighbour entry of
//! that route's next hop, and a nudge (`NTF_USE`) that makes the kernel
//! resolve or re-confirm a neighbour. XDP traffic bypasses the kernel's
//! neighbour state machine, so without the nudge an entry only goes stale.
//! And the announcements of link, neighbour and route changes (`Events`).
use std::net::IpAddr;

use anyhow::{anyhow, bail, Context, Result};
use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_REQUEST};
use netlink_packet_route::{
    link::{LinkAttribute, LinkMessage},
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState},
    route::{RouteAddress, RouteAttribute, RouteMessage},
    AddressFamily, RouteNetlinkMessage,
};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

pub struct Netlink {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

/// Where packets toward a remote leave, and through which neighbour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub oif: u32,
    /// The gateway, or the remote itself when it is on link.
    pub via: IpAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neighbour {
    pub mac: Option<[u8; 6]>,
    /// Reachable, permanent or noarp: no need to ask the kernel to check.
    pub confirmed: bool,
}

fn family(ip: IpAddr) -> AddressFamily {
    if ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

impl Netlink {
    pub fn open() -> Result<Netlink> {
        let mut socket = Socket::new(NETLINK_ROUTE).context("opening a netlink socket")?;
        socket.bind_auto().context("binding the netlink socket")?;
        socket.connect(&SocketAddr::new(0, 0)).context("connecting the netlink socket")?;
        Ok(Netlink { socket, seq: 0, buf: vec![0; 64 * 1024] })
    }

    /// Sends one request and returns the messages answering it (an error
    /// reply becomes `Err` with the errno).
    fn request(&mut self, msg: RouteNetlinkMessage, flags: u16) -> Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.seq;
        let mut req = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        req.finalize();
        let mut out = vec![0; req.header.length as usize];
        req.serialize(&mut out);
        self.socket.send(&out, 0).context("netlink send")?;
        let mut answers = Vec::new();
        loop {
            let n = self.socket.recv(&mut &mut self.buf[..], 0).context("netlink recv")?;
            let mut offset = 0;
            while offset < n {
                let msg: NetlinkMessage<RouteNetlinkMessage> =
                    NetlinkMessage::deserialize(&self.buf[offset..n]).context("decoding a netlink answer")?;
                let len = msg.header.length as usize;
                let ours = msg.header.sequence_number == self.seq;
                let multi = msg.header.flags & netlink_packet_core::NLM_F_MULTIPART != 0;
                match msg.payload {
                    _ if !ours => {}
                    NetlinkPayload::Error(e) => match e.code {
                        None => return Ok(answers),
                        Some(code) => return Err(std::io::Error::from_raw_os_error(-code.get()).into()),
                    },
                    NetlinkPayload::Done(_) => return Ok(answers),
                    NetlinkPayload::InnerMessage(m) => {
                        answers.push(m);
                        if !multi && flags & NLM_F_ACK == 0 {
                            return Ok(answers);
                        }
                    }
                    _ => {}
                }
                if len == 0 {
                    break;
                }
                offset += len;
            }
        }
    }

    /// MAC address and MTU of interface `ifindex`.
    pub fn link(&mut self, ifindex: u32) -> Result<([u8; 6], u32)> {
        let mut msg = LinkMessage::default();
        msg.header.index = ifindex;
        let answers = self.request(RouteNetlinkMessage::GetLink(msg), 0)?;
        let Some(RouteNetlinkMessage::NewLink(link)) = answers.into_iter().next() else {
            bail!("no answer about interface {ifindex}");
        };
        let mut mac = None;
        let mut mtu = None;
        for a in link.attributes {
            match a {
                LinkAttribute::Address(b) if b.len() == 6 => mac = Some([b[0], b[1], b[2], b[3], b[4], b[5]]),
                LinkAttribute::Mtu(m) => mtu = Some(m),
                _ => {}
            }
        }
        Ok((mac.ok_or_else(|| anyhow!("interface {ifindex} has no Ethernet address"))?, mtu.unwrap_or(1500)))
    }

    /// `ip route get <dst>`.
    pub fn route_get(&mut self, dst: IpAddr) -> Result<Route> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = family(dst);
        msg.header.destination_prefix_length = if dst.is_ipv4() { 32 } else { 128 };
        msg.attributes.push(RouteAttribute::Destination(RouteAddress::from(dst)));
        let answers =
            self.request(RouteNetlinkMessage::GetRoute(msg), 0).with_context(|| format!("no route to {dst}"))?;
        let Some(RouteNetlinkMessage::NewRoute(route)) = answers.into_iter().next() else {
            bail!("no route to {dst}");
        };
        let mut oif = None;
        let mut via = dst;
        for a in route.attributes {
            match a {
                RouteAttribute::Oif(i) => oif = Some(i),
                RouteAttribute::Gateway(RouteAddress::Inet(g)) => via = g.into(),
                RouteAttribute::Gateway(RouteAddress::Inet6(g)) => via = g.into(),
                _ => {}
            }
        }
        Ok(Route { oif: oif.ok_or_else(|| anyhow!("the route to {dst} has no output interface"))?, via })
    }

    /// The neighbour entry of `ip` on `ifindex`, if the kernel has one.
    pub fn neighbour(&mut self, ifindex: u32, ip: IpAddr) -> Result<Option<Neighbour>> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = family(ip);
        msg.header.ifindex = ifindex;
        msg.attributes.push(NeighbourAttribute::Destination(neigh_addr(ip)));
        let answers = match self.request(RouteNetlinkMessage::GetNeighbour(msg), 0) {
            Ok(a) => a,
            Err(e) if e.downcast_ref::<std::io::Error>().and_then(|e| e.raw_os_error()) == Some(libc::ENOENT) => {
                return Ok(None)
            }
            Err(e) => return Err(e),
        };
        let Some(RouteNetlinkMessage::NewNeighbour(n)) = answers.into_iter().next() else {
            return Ok(None);
        };
        Ok(Some(neighbour_of(&n).1))
    }

    /// Asks the kernel to resolve (or re-confirm) `ip` on `ifindex`, as if
    /// it had a packet to send there (`NTF_USE`), creating the entry if
    /// needed. The answer arrives asynchronously in the neighbour table.
    pub fn nudge(&mut self, ifindex: u32, ip: IpAddr) -> Result<()> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = family(ip);
        msg.header.ifindex = ifindex;
        msg.header.flags = NeighbourFlags::Use;
        msg.header.state = NeighbourState::None;
        msg.attributes.push(NeighbourAttribute::Destination(neigh_addr(ip)));
        self.request(RouteNetlinkMessage::NewNeighbour(msg), NLM_F_CREATE | NLM_F_ACK)
            .with_context(|| format!("asking the kernel to resolve {ip}"))?;
        Ok(())
    }
}

/// What a neighbour message says: its address, and the MAC if the entry is
/// usable (an incomplete or failed entry may still carry a stale one).
fn neighbour_of(n: &NeighbourMessage) -> (Option<IpAddr>, Neighbour) {
    let mut ip = None;
    let mut mac = None;
    for a in &n.attributes {
        match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => ip = Some(IpAddr::V4(*a)),
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => ip = Some(IpAddr::V6(*a)),
            NeighbourAttribute::LinkLayerAddress(b) if b.len() == 6 => mac = Some([b[0], b[1], b[2], b[3], b[4], b[5]]),
            _ => {}
        }
    }
    let usable = !matches!(n.header.state, NeighbourState::Incomplete | NeighbourState::Failed | NeighbourState::None);
    let confirmed =
        matches!(n.header.state, NeighbourState::Reachable | NeighbourState::Permanent | NeighbourState::Noarp);
    (ip, Neighbour { mac: mac.filter(|_| usable), confirmed })
}

/// A change the kernel announced that may move a tunnel's next hop or a
/// local port's interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A neighbour entry was added or changed (deletions are not reported:
    /// a MAC that worked is kept until another one is known).
    Neighbour { ifindex: u32, ip: IpAddr, mac: Option<[u8; 6]> },
    /// A route was added or removed: any next hop may have moved.
    Route,
    /// An interface appeared, changed or went away.
    Link,
    /// The socket's buffer overflowed and events were lost: re-check all.
    Overrun,
}

/// `RTNLGRP_*` from linux/rtnetlink.h (netlink-packet-route does not
/// export them).
const RTNLGRP_LINK: u32 = 1;
const RTNLGRP_NEIGH: u32 = 3;
const RTNLGRP_IPV4_ROUTE: u32 = 7;
const RTNLGRP_IPV6_ROUTE: u32 = 11;

/// The kernel's link, neighbour and route announcements, read with a
/// blocking receive. They make a next-hop change (a router's MAC moving in
/// a failover, a route to a remote changing) reach the tunnel map within
/// milliseconds, instead of at the next periodic re-check.
pub struct Events {
    socket: Socket,
    buf: Vec<u8>,
}

impl Events {
    pub fn open() -> Result<Events> {
        let mut socket = Socket::new(NETLINK_ROUTE).context("opening the netlink event socket")?;
        socket.bind_auto().context("binding the netlink event socket")?;
        for group in [RTNLGRP_LINK, RTNLGRP_NEIGH, RTNLGRP_IPV4_ROUTE, RTNLGRP_IPV6_ROUTE] {
            socket.add_membership(group).with_context(|| format!("joining rtnetlink group {group}"))?;
        }
        Ok(Events { socket, buf: vec![0; 64 * 1024] })
    }

    /// Waits for the next datagram of events and decodes it. Messages that
    /// do not decode are skipped: they cannot be about what xgw watches in
    /// a form it understands, and the periodic re-check still covers it.
    pub fn wait(&mut self) -> Result<Vec<Event>> {
        let n = match self.socket.recv(&mut &mut self.buf[..], 0) {
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => return Ok(vec![Event::Overrun]),
            Err(e) => return Err(e).context("netlink event recv"),
        };
        let mut events = Vec::new();
        let mut offset = 0;
        while offset < n {
            let Ok(msg) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buf[offset..n]) else { break };
            let len = msg.header.length as usize;
            let event = match msg.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNeighbour(m)) => match neighbour_of(&m) {
                    (Some(ip), nb) => Some(Event::Neighbour { ifindex: m.header.ifindex, ip, mac: nb.mac }),
                    (None, _) => None,
                },
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(_) | RouteNetlinkMessage::DelRoute(_)) => {
                    Some(Event::Route)
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(_) | RouteNetlinkMessage::DelLink(_)) => {
                    Some(Event::Link)
                }
                _ => None,
            };
            events.extend(event);
            if len == 0 {
                break;
            }
            offset += len;
        }
        Ok(events)
    }
}

fn neigh_addr(ip: IpAddr) -> NeighbourAddress {
    match ip {
        IpAddr::V4(a) => NeighbourAddress::Inet(a),
        IpAddr::V6(a) => NeighbourAddress::Inet6(a),
    }
}
