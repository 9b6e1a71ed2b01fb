//! The generator for kernels that refuse live-frames BPF_PROG_TEST_RUN
//! (`live::permitted`: some, 6.18.44-fc among them, answer EPERM), and for
//! frames larger than a page, which live mode refuses everywhere: an
//! AF_PACKET socket on the far end of a veth, `sendmmsg` in batches of 64
//! with the qdisc bypassed. Each frame is an skb that veth's receive path
//! turns into an XDP frame for the program under test, and the softirq
//! that runs it is raised by the send itself, on the sender's core, so the
//! time of the sends is what the frames cost, as with live frames. It costs
//! more per frame than live frames (a system call per 64, an skb and a
//! copy per frame), so rates are lower and their ratios closer to 1; the
//! difference in ns per frame between a program and its baseline is what
//! carries over between the two generators.
use std::{
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use xgw_common::maps::BenchVary;
use xgw_tests::netns::Netns;

const BATCH: usize = 64;

/// A raw socket bound to one interface of a namespace.
pub struct Sender {
    fd: OwnedFd,
    ifname: String,
}

impl Sender {
    pub fn new(ns: &Netns, ifname: &str) -> Sender {
        let ifindex = ns.ifindex(ifname);
        let fd = ns.enter(|| {
            // SAFETY: plain socket calls; every pointer passed lives until
            // the call returns, and the descriptor is owned from here on.
            unsafe {
                let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
                assert!(fd >= 0, "AF_PACKET socket: {}", std::io::Error::last_os_error());
                let fd = OwnedFd::from_raw_fd(fd);
                let one: libc::c_int = 1;
                let r = libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_PACKET,
                    libc::PACKET_QDISC_BYPASS,
                    (&raw const one).cast(),
                    std::mem::size_of_val(&one) as u32,
                );
                assert_eq!(r, 0, "PACKET_QDISC_BYPASS: {}", std::io::Error::last_os_error());
                let mut addr: libc::sockaddr_ll = std::mem::zeroed();
                addr.sll_family = libc::AF_PACKET as u16;
                addr.sll_ifindex = ifindex as i32;
                let r = libc::bind(fd.as_raw_fd(), (&raw const addr).cast(), std::mem::size_of_val(&addr) as u32);
                assert_eq!(r, 0, "bind to {ifname}: {}", std::io::Error::last_os_error());
                fd
            }
        });
        Sender { fd, ifname: ifname.into() }
    }

    /// Sends `pkt` until `more` says stop (asked before each batch of 64),
    /// frame `n` varied as `xgw_vary` would vary it (`vary`), from frame
    /// `first` on. Returns the frames sent. A signal ends a batch early
    /// (EINTR), not the sending; a full ring (ENOBUFS) drops a batch.
    fn send(&self, pkt: &[u8], vary: Option<&BenchVary>, first: u64, mut more: impl FnMut(u64) -> bool) -> u64 {
        let mut bufs: Vec<Vec<u8>> = (0..BATCH).map(|_| pkt.to_vec()).collect();
        let mut iovs: Vec<libc::iovec> =
            bufs.iter_mut().map(|b| libc::iovec { iov_base: b.as_mut_ptr().cast(), iov_len: b.len() }).collect();
        // SAFETY: zeroed mmsghdr is a valid empty header; each points at one
        // iovec of `iovs`, which outlives every call below.
        let mut msgs: Vec<libc::mmsghdr> = iovs
            .iter_mut()
            .map(|iov| {
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_iov = iov;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        let (mut sent, mut progress) = (0u64, Instant::now());
        while more(sent) {
            if let Some(v) = vary {
                for (i, iov) in iovs.iter().enumerate() {
                    // SAFETY: each iovec points at its own buffer of `bufs`.
                    let b = unsafe { std::slice::from_raw_parts_mut(iov.iov_base.cast::<u8>(), iov.iov_len) };
                    v.apply(first + sent + i as u64, b);
                }
            }
            // SAFETY: msgs and the buffers they point at are valid here.
            let n = unsafe { libc::sendmmsg(self.fd.as_raw_fd(), msgs.as_mut_ptr(), BATCH as u32, 0) };
            if n > 0 {
                sent += n as u64;
                progress = Instant::now();
                continue;
            }
            // ENOBUFS: the veth peer's ring was full and the frame dropped
            // (its softirq moved to ksoftirqd on a busy core); the rate is
            // what arrives, so send on. EINTR: a signal (see `send_until`).
            let e = std::io::Error::last_os_error();
            let transient = matches!(e.raw_os_error(), Some(libc::ENOBUFS | libc::EAGAIN | libc::EINTR));
            assert!(transient, "sendmmsg on {}: {e}", self.ifname);
            assert!(
                progress.elapsed() < Duration::from_secs(5),
                "sendmmsg on {}: no frame sent for 5 s: {e}",
                self.ifname
            );
        }
        sent
    }

    /// Sends at least `frames` frames; returns the time it took.
    pub fn send_n(&self, pkt: &[u8], vary: Option<&BenchVary>, frames: u64) -> Duration {
        let t = Instant::now();
        self.send(pkt, vary, 0, |sent| sent < frames);
        t.elapsed()
    }

    /// Sends for `window`; returns the frames sent.
    pub fn send_for(&self, pkt: &[u8], window: Duration) -> u64 {
        let t = Instant::now();
        self.send(pkt, None, 0, |_| t.elapsed() < window)
    }

    /// Sends until `stop` is set.
    pub fn send_until(&self, pkt: &[u8], stop: &AtomicBool) -> u64 {
        self.send(pkt, None, 0, |_| !stop.load(Ordering::SeqCst))
    }
}
