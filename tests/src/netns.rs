//! Network namespaces, veth pairs and bpffs mounts as drop guards.
use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
};

use nix::sched::{setns, CloneFlags};

use crate::{process::Process, sh};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A short name unique to this test process: `xgw<pid>x<n><tag>`.
pub fn unique_name(tag: &str) -> String {
    format!("xgw{}x{}{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed), tag)
}

/// A network namespace, deleted on drop (which also deletes its interfaces).
#[derive(Debug)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let name = unique_name(tag);
        sh(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        ns.ok(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).args(args);
        cmd
    }

    /// Runs a command inside the namespace and returns its output, whatever its status.
    pub fn exec(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap_or_else(|e| panic!("cannot run {args:?} in {}: {e}", self.name))
    }

    /// Runs a command inside the namespace; fails the test if it fails. Returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.exec(args);
        assert!(
            out.status.success(),
            "in {}: {args:?} failed ({}):\n{}{}",
            self.name,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts a long-running process inside the namespace; it is killed (by
    /// PID) when the returned guard drops.
    pub fn spawn(&self, args: &[&str]) -> Process {
        Process::spawn(self.command(args), &format!("{args:?} in {}", self.name))
    }

    /// Runs `f` on a thread that has entered this namespace (network only:
    /// the mount namespace, and so bpffs, stays the host's). aya attaches XDP
    /// through netlink in the calling thread's namespace, so loading from the
    /// test process goes through here.
    pub fn enter<R: Send, F: FnOnce() -> R + Send>(&self, f: F) -> R {
        enter(&self.name, f)
    }

    /// Turns IPv6 off in this namespace, so that router and neighbour
    /// solicitations do not disturb exact packet counts.
    pub fn disable_ipv6(&self) {
        self.ok(&["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"]);
    }

    /// The interface index of `ifname` inside this namespace.
    pub fn ifindex(&self, ifname: &str) -> u32 {
        self.ok(&["cat", &format!("/sys/class/net/{ifname}/ifindex")]).trim().parse().expect("ifindex")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

/// One end of a veth pair.
#[derive(Debug, Clone)]
pub struct VethEnd {
    pub ifname: String,
    /// Address with prefix length, e.g. `198.51.100.1/24`; may be empty.
    pub addr: String,
}

impl VethEnd {
    /// The address without its prefix length.
    pub fn ip(&self) -> &str {
        self.addr.split('/').next().unwrap_or("")
    }
}

/// A veth pair between two namespaces, created directly inside them (never in
/// the host namespace, so parallel tests cannot collide on names).
#[derive(Debug, Clone)]
pub struct Veth {
    pub a: VethEnd,
    pub b: VethEnd,
}

impl Veth {
    /// Creates `a_if` in `a` and `b_if` in `b`, sets the addresses (if not
    /// empty) and brings both ends up.
    pub fn new(a: &Netns, a_if: &str, a_addr: &str, b: &Netns, b_if: &str, b_addr: &str) -> Veth {
        Veth::with_queues(a, a_if, a_addr, b, b_if, b_addr, 1)
    }

    /// As `new`, with `queues` transmit and receive queues on each end. A
    /// frame sent on a CPU goes out of queue CPU mod `queues` (AF_PACKET
    /// without a qdisc, an XDP redirect) and is received in the peer's
    /// queue of that number, whose NAPI runs on the sending CPU: a sender
    /// per CPU loads each CPU's own receive path.
    pub fn with_queues(a: &Netns, a_if: &str, a_addr: &str, b: &Netns, b_if: &str, b_addr: &str, queues: u32) -> Veth {
        let q = queues.to_string();
        let mut cmd = vec!["ip", "link", "add", a_if, "netns", &a.name];
        if queues > 1 {
            cmd.extend(["numtxqueues", &q, "numrxqueues", &q]);
        }
        cmd.extend(["type", "veth", "peer", "name", b_if, "netns", &b.name]);
        if queues > 1 {
            cmd.extend(["numtxqueues", &q, "numrxqueues", &q]);
        }
        sh(&cmd);
        for (ns, ifname, addr) in [(a, a_if, a_addr), (b, b_if, b_addr)] {
            if !addr.is_empty() {
                ns.ok(&["ip", "addr", "add", addr, "dev", ifname]);
            }
            ns.ok(&["ip", "link", "set", ifname, "up"]);
        }
        Veth {
            a: VethEnd { ifname: a_if.into(), addr: a_addr.into() },
            b: VethEnd { ifname: b_if.into(), addr: b_addr.into() },
        }
    }
}

/// A private bpffs mount for one test's pins; unmounted and removed on drop.
#[derive(Debug)]
pub struct BpfFs {
    pub dir: PathBuf,
}

impl BpfFs {
    pub fn new(tag: &str) -> BpfFs {
        let dir = std::env::temp_dir().join(unique_name(tag));
        std::fs::create_dir_all(&dir).expect("create bpffs dir");
        sh(&["mount", "-t", "bpf", "bpf", dir.to_str().unwrap()]);
        BpfFs { dir }
    }
}

impl Drop for BpfFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).output();
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Runs `f` on a thread inside the named namespace (see `Netns::enter`).
pub fn enter<R: Send, F: FnOnce() -> R + Send>(name: &str, f: F) -> R {
    let path = Path::new("/var/run/netns").join(name);
    std::thread::scope(|s| {
        s.spawn(|| {
            let fd = File::open(&path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
            setns(fd, CloneFlags::CLONE_NEWNET).expect("setns into test namespace");
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}
