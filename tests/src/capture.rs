//! Packet capture (tcpdump inside a namespace, read back as raw frames) and
//! raw frame injection (an AF_PACKET socket inside a namespace), so tests can
//! check real bytes on the wire and send bytes no kernel stack would build.
use std::{
    fs,
    io::Read,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};

use crate::{netns::unique_name, Netns};

/// tcpdump running on one interface of a namespace, writing a pcap file.
/// Stopped (by PID) and its files removed on drop.
#[derive(Debug)]
pub struct Capture {
    child: Option<Child>,
    dir: PathBuf,
    what: String,
}

impl Capture {
    /// Starts tcpdump on `ifname` in `ns` with an optional BPF `filter`
    /// (tcpdump expression words) and returns once it is capturing.
    pub fn start(ns: &Netns, ifname: &str, filter: &[&str]) -> Capture {
        let dir = std::env::temp_dir().join(unique_name("cap"));
        fs::create_dir_all(&dir).expect("capture dir");
        let pcap = dir.join("cap.pcap");
        let err = fs::File::create(dir.join("stderr")).expect("capture stderr file");
        // -Z root: Debian's tcpdump otherwise drops to user tcpdump after
        // opening the interface and then cannot write into a root-owned dir.
        // --immediate-mode: without it the kernel ring hands packets over in
        // blocks (up to 1 s late) and a stop right after the traffic finds
        // them "received by filter" but never written. -U: flush per packet.
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns.name,
                "tcpdump",
                "-i",
                ifname,
                "-nn",
                "-s0",
                "--immediate-mode",
                "-U",
                "-Z",
                "root",
                "-w",
            ])
            .arg(&pcap)
            .args(filter)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start tcpdump: {e}"));
        let what = format!("tcpdump -i {ifname} in {}", ns.name);
        let cap = Capture { child: Some(child), dir, what };
        // tcpdump says "listening on" once the socket is bound; before that,
        // packets would be missed.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = fs::read_to_string(cap.dir.join("stderr")).unwrap_or_default();
            if text.contains("listening on") {
                break;
            }
            assert!(Instant::now() < deadline, "{} did not start: {text}", cap.what);
            std::thread::sleep(Duration::from_millis(20));
        }
        cap
    }

    /// Stops tcpdump and returns the captured frames, in order.
    pub fn stop(mut self) -> Vec<Vec<u8>> {
        let mut child = self.child.take().expect("running");
        // SIGINT: tcpdump flushes and closes the file before exiting.
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
        let _ = child.wait();
        let mut bytes = Vec::new();
        fs::File::open(self.dir.join("cap.pcap"))
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .unwrap_or_else(|e| panic!("{}: no pcap file: {e}", self.what));
        read_pcap(&bytes)
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The frames of a classic pcap file (either byte order, micro- or
/// nanosecond timestamps) with Ethernet link type.
pub fn read_pcap(b: &[u8]) -> Vec<Vec<u8>> {
    assert!(b.len() >= 24, "pcap file too short ({} bytes)", b.len());
    let magic = u32::from_le_bytes(b[0..4].try_into().unwrap());
    let le = match magic {
        0xa1b2_c3d4 | 0xa1b2_3c4d => true,
        0xd4c3_b2a1 | 0x4d3c_b2a1 => false,
        m => panic!("not a pcap file (magic {m:#x})"),
    };
    let u32_at = |o: usize| {
        let a: [u8; 4] = b[o..o + 4].try_into().unwrap();
        if le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    };
    assert_eq!(u32_at(20), 1, "pcap link type is not Ethernet");
    let mut frames = Vec::new();
    let mut o = 24;
    while o + 16 <= b.len() {
        let caplen = u32_at(o + 8) as usize;
        let start = o + 16;
        if start + caplen > b.len() {
            break; // a record cut short by the stop: ignore it
        }
        frames.push(b[start..start + caplen].to_vec());
        o = start + caplen;
    }
    frames
}

/// Sends each frame as is (no checksum or header fix-up by the kernel) out of
/// `ifname` in `ns`, through an AF_PACKET socket.
pub fn inject(ns: &Netns, ifname: &str, frames: &[Vec<u8>]) {
    let ifindex = ns.ifindex(ifname);
    ns.enter(|| {
        // SAFETY: plain socket syscalls on a descriptor owned by this block.
        unsafe {
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
            assert!(fd >= 0, "AF_PACKET socket: {}", std::io::Error::last_os_error());
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_ifindex = ifindex as i32;
            sll.sll_halen = 6;
            for f in frames {
                let n = libc::sendto(
                    fd,
                    f.as_ptr().cast(),
                    f.len(),
                    0,
                    (&sll as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                );
                let err = std::io::Error::last_os_error();
                if n != f.len() as isize {
                    libc::close(fd);
                    panic!("sendto {ifname}: {n}: {err}");
                }
            }
            libc::close(fd);
        }
    });
}
