//! Where an ovsdb-server listens, in OVS's own notation (`unix:PATH`,
//! `tcp:IP:PORT`, `tcp:[IPV6]:PORT`), alone or as a comma-separated list of
//! raft members, as `ovn-remote` and `--db` take them.
use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    str::FromStr,
};

/// OVS's default OVSDB port, used when a `tcp:` remote names none.
pub const DEFAULT_PORT: u16 = 6640;

/// One server address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Remote {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

/// A remote (or one element of a list) that cannot be used, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("remote {remote:?}: {reason}")]
pub struct RemoteError {
    pub remote: String,
    pub reason: String,
}

fn err(remote: &str, reason: impl Into<String>) -> RemoteError {
    RemoteError { remote: remote.to_owned(), reason: reason.into() }
}

impl FromStr for Remote {
    type Err = RemoteError;

    fn from_str(s: &str) -> Result<Remote, RemoteError> {
        let (kind, rest) = s.split_once(':').ok_or_else(|| err(s, "expected unix:PATH or tcp:IP:PORT"))?;
        match kind {
            "unix" if rest.is_empty() => Err(err(s, "empty socket path")),
            "unix" => Ok(Remote::Unix(PathBuf::from(rest))),
            "tcp" => parse_tcp(s, rest).map(Remote::Tcp),
            "ssl" => Err(err(s, "ssl: is not supported (this client speaks plain unix: and tcp: only)")),
            "punix" | "ptcp" | "pssl" => {
                Err(err(s, format!("{kind}: is a listening address for a server; a client needs unix: or tcp:")))
            }
            _ => Err(err(s, format!("unknown kind {kind:?}, expected unix:PATH or tcp:IP:PORT"))),
        }
    }
}

fn parse_tcp(s: &str, rest: &str) -> Result<SocketAddr, RemoteError> {
    // IPv6 needs brackets: without them `tcp:::1:6640` has no one reading.
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (addr, after) = v6.split_once(']').ok_or_else(|| err(s, "missing ']' after the IPv6 address"))?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(|| err(s, "expected ':PORT' after ']'"))?),
        };
        (addr, port)
    } else if rest.matches(':').count() > 1 {
        return Err(err(s, "an IPv6 address needs brackets: tcp:[ADDR]:PORT"));
    } else {
        match rest.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        }
    };
    if host.is_empty() {
        return Err(err(s, "missing IP address"));
    }
    let ip: IpAddr =
        host.parse().map_err(|_| err(s, format!("{host:?} is not an IP address (host names are not resolved)")))?;
    if rest.starts_with('[') && !ip.is_ipv6() {
        return Err(err(s, "brackets are for IPv6 addresses"));
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(0) | Err(_) => return Err(err(s, format!("{p:?} is not a port (1-65535)"))),
            Ok(p) => p,
        },
    };
    Ok(SocketAddr::new(ip, port))
}

impl fmt::Display for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Remote::Unix(p) => write!(f, "unix:{}", p.display()),
            Remote::Tcp(SocketAddr::V4(a)) => write!(f, "tcp:{}:{}", a.ip(), a.port()),
            Remote::Tcp(SocketAddr::V6(a)) => write!(f, "tcp:[{}]:{}", a.ip(), a.port()),
        }
    }
}

/// A non-empty list of remotes: the members of a raft cluster, or one
/// standalone server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Remotes(Vec<Remote>);

impl Remotes {
    pub fn new(list: Vec<Remote>) -> Result<Remotes, RemoteError> {
        if list.is_empty() {
            return Err(err("", "no remote given"));
        }
        Ok(Remotes(list))
    }

    pub fn as_slice(&self) -> &[Remote] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Remote> for Remotes {
    fn from(r: Remote) -> Remotes {
        Remotes(vec![r])
    }
}

impl FromStr for Remotes {
    type Err = RemoteError;

    fn from_str(s: &str) -> Result<Remotes, RemoteError> {
        if s.trim().is_empty() {
            return Err(err(s, "no remote given"));
        }
        let list = s
            .split(',')
            .enumerate()
            .map(|(i, e)| {
                let e = e.trim();
                if e.is_empty() {
                    return Err(err(s, format!("element {} of the list is empty", i + 1)));
                }
                e.parse()
            })
            .collect::<Result<Vec<Remote>, _>>()?;
        Remotes::new(list)
    }
}

impl fmt::Display for Remotes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_form() {
        assert_eq!("unix:/run/ovn/ovnsb_db.sock".parse(), Ok(Remote::Unix("/run/ovn/ovnsb_db.sock".into())));
        assert_eq!("tcp:127.0.0.1:6642".parse(), Ok(Remote::Tcp("127.0.0.1:6642".parse().unwrap())));
        assert_eq!("tcp:198.51.100.7".parse(), Ok(Remote::Tcp("198.51.100.7:6640".parse().unwrap())));
        assert_eq!("tcp:[2001:db8::1]:6642".parse(), Ok(Remote::Tcp("[2001:db8::1]:6642".parse().unwrap())));
        assert_eq!("tcp:[::1]".parse(), Ok(Remote::Tcp("[::1]:6640".parse().unwrap())));
        for s in ["unix:/a b", "tcp:127.0.0.1:6642", "tcp:[2001:db8::1]:6642"] {
            assert_eq!(s.parse::<Remote>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn lists() {
        let r: Remotes = "tcp:127.0.0.1:6641, tcp:127.0.0.1:6642,unix:/x".parse().unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(r.to_string(), "tcp:127.0.0.1:6641,tcp:127.0.0.1:6642,unix:/x");
    }

    #[test]
    fn errors_name_the_bad_element() {
        let cases = [
            ("tcp:127.0.0.1:6641,tcp:127.0.0.1:66x", "tcp:127.0.0.1:66x", "\"66x\" is not a port"),
            ("tcp:127.0.0.1:6641,,unix:/x", "tcp:127.0.0.1:6641,,unix:/x", "element 2 of the list is empty"),
            ("ssl:127.0.0.1:6641", "ssl:127.0.0.1:6641", "not supported"),
            ("ptcp:6641", "ptcp:6641", "listening address"),
            ("tcp:2001:db8::1:6641", "tcp:2001:db8::1:6641", "tcp:[ADDR]:PORT"),
            ("tcp:ovn-central:6641", "tcp:ovn-central:6641", "host names are not resolved"),
            ("tcp:[2001:db8::1:6641", "tcp:[2001:db8::1:6641", "missing ']'"),
            ("tcp:[198.51.100.1]:6641", "tcp:[198.51.100.1]:6641", "brackets are for IPv6"),
            ("tcp:127.0.0.1:0", "tcp:127.0.0.1:0", "not a port"),
            ("unix:", "unix:", "empty socket path"),
            ("/run/x.sock", "/run/x.sock", "expected unix:PATH"),
            ("", "", "no remote given"),
        ];
        for (input, remote, reason) in cases {
            let e = input.parse::<Remotes>().unwrap_err();
            assert_eq!(e.remote, remote, "{input}");
            assert!(e.reason.contains(reason), "{input}: {e}");
        }
    }
}
