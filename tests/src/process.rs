//! A process started by a test, stopped by PID when its guard drops.
use std::{
    io::Read,
    process::{Child, Command, Stdio},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};

/// A process's stdout and stderr, read as they come: a child that writes
/// more than a pipe holds (a daemon's log under a long test) must never
/// block on a pipe nobody reads. What has come so far can be read at any
/// time (`stderr_so_far`).
#[derive(Debug)]
struct Output {
    stdout: Drained,
    stderr: Drained,
}

#[derive(Debug)]
struct Drained {
    buf: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    done: JoinHandle<()>,
}

fn drain(mut r: impl Read + Send + 'static) -> Drained {
    let buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let out = buf.clone();
    let done = std::thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        while let Ok(n) = r.read(&mut chunk) {
            if n == 0 {
                break;
            }
            out.lock().unwrap().extend_from_slice(&chunk[..n]);
        }
    });
    Drained { buf, done }
}

impl Drained {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf.lock().unwrap()).into_owned()
    }
}

impl Output {
    fn collect(self) -> (String, String) {
        let text = |d: Drained| {
            let Drained { buf, done } = d;
            let _ = done.join();
            let bytes = buf.lock().unwrap();
            String::from_utf8_lossy(&bytes).into_owned()
        };
        (text(self.stdout), text(self.stderr))
    }
}

#[derive(Debug)]
pub struct Process {
    child: Option<Child>,
    output: Option<Output>,
    what: String,
}

impl Process {
    /// One busy loop (`sh`, nice 0) per core, stopped when the returned
    /// processes are dropped: CPU pressure for the BFD stress runs.
    pub fn cpu_hogs() -> Vec<Process> {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        (0..cores)
            .map(|_| {
                let mut c = Command::new("sh");
                c.args(["-c", "while :; do :; done"]);
                Process::spawn(c, "cpu hog")
            })
            .collect()
    }

    pub fn spawn(mut cmd: Command, what: &str) -> Process {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        let output = Output {
            stdout: drain(child.stdout.take().expect("piped")),
            stderr: drain(child.stderr.take().expect("piped")),
        };
        Process { child: Some(child), output: Some(output), what: what.into() }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends `sig` to this process only.
    pub fn signal(&self, sig: Signal) {
        let _ = kill(Pid::from_raw(self.pid() as i32), sig);
    }

    /// Stops the process (SIGTERM, then SIGKILL after `grace`) and returns
    /// its stdout and stderr.
    pub fn stop(mut self, grace: Duration) -> (String, String) {
        let mut child = self.child.take().expect("running");
        let pid = Pid::from_raw(child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = kill(pid, Signal::SIGKILL);
        child.wait().expect("wait");
        self.output.take().expect("read once").collect()
    }

    /// Waits for the process to exit by itself, at most `timeout`.
    pub fn wait(mut self, timeout: Duration) -> Option<(std::process::ExitStatus, String, String)> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().expect("running");
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                _ if Instant::now() >= deadline => return None,
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        let status = self.child.take().unwrap().wait().ok()?;
        let (stdout, stderr) = self.output.take().expect("read once").collect();
        Some((status, stdout, stderr))
    }

    /// Whether the process has exited (it is not reaped from the guard).
    pub fn has_exited(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(Some(_))))
    }

    /// What the process has written to stderr so far.
    pub fn stderr_so_far(&self) -> String {
        self.output.as_ref().map(|o| o.stderr.text()).unwrap_or_default()
    }

    pub fn describe(&self) -> &str {
        &self.what
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
        }
    }
}

/// Pins the calling thread (and threads it starts) to the CPU it is on, so
/// that every test run lands on one CPU's per-CPU maps; returns that CPU.
pub fn pin_to_this_cpu() -> usize {
    // SAFETY: sched_getcpu has no preconditions.
    let cpu = unsafe { libc::sched_getcpu() };
    assert!(cpu >= 0, "sched_getcpu: {}", std::io::Error::last_os_error());
    pin_to(cpu as usize);
    cpu as usize
}

/// Pins the calling thread to CPU `cpu`.
pub fn pin_to(cpu: usize) {
    // SAFETY: plain libc calls on a zeroed cpu_set_t owned by this frame.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        let r = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        assert_eq!(r, 0, "sched_setaffinity to CPU {cpu}: {}", std::io::Error::last_os_error());
    }
}
