//! The systemd unit (`scripts/xgw.service`) read the way systemd reads it,
//! and a [`Sandbox`] that puts a daemon started by a test under the unit's
//! restrictions without systemd (CI has systemd installed, not running):
//!
//! - the capability bounding set (`CapabilityBoundingSet=`; the daemon runs
//!   as root, so its effective set is exactly that), `NoNewPrivileges=`,
//!   `UMask=`;
//! - the seccomp filters systemd installs, one per option as systemd does
//!   (the strictest answer wins): `SystemCallFilter=` (expanded by
//!   `systemd-analyze syscall-filter`, `@default` first, `~` lines removing,
//!   anything else kills the process) with `SystemCallArchitectures=native`,
//!   `RestrictAddressFamilies=` (EAFNOSUPPORT), `RestrictNamespaces=yes`
//!   (EPERM; clone3 gets ENOSYS, as from systemd, so glibc falls back to
//!   clone) and `MemoryDenyWriteExecute=` (EPERM);
//! - what may be written: a private mount namespace in which every mount is
//!   read-only but the test's state and bpffs directories (the unit's
//!   `ProtectSystem=strict` with `ReadWritePaths=`, `StateDirectory=` and
//!   `RuntimeDirectory=`, and `ProtectKernelTunables=`'s read-only `/proc/sys`
//!   and `/sys`: stricter, since /proc, /dev and /tmp are read-only too), and
//!   a `hidepid=` /proc for `ProtectProc=`.
//!
//! Not reproduced: `PrivateTmp=`, `PrivateDevices=`/`DevicePolicy=`,
//! `ProtectKernelModules=`, `ProtectKernelLogs=`, `ProtectClock=`,
//! `ProtectHostname=`, `LockPersonality=`, `RestrictSUIDSGID=` (the daemon
//! touches none of what they guard), and the `+` ExecStartPre, which the
//! test's own bpffs mount stands for.
use std::{
    collections::{BTreeMap, BTreeSet},
    ffi::CString,
    fs::File,
    os::{fd::AsRawFd, unix::ffi::OsStrExt, unix::process::CommandExt},
    path::{Path, PathBuf},
    process::Command,
};

/// The unit file, `[Service]` section: each `Key=value` in file order,
/// continuation lines joined.
#[derive(Debug, Clone)]
pub struct Unit {
    pub path: PathBuf,
    pub text: String,
    service: Vec<(String, String)>,
}

impl Unit {
    /// `scripts/xgw.service` of this checkout.
    pub fn load() -> Unit {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/xgw.service");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Unit::parse(path, text)
    }

    pub fn parse(path: PathBuf, text: String) -> Unit {
        let mut service = Vec::new();
        let mut section = String::new();
        let mut pending = String::new();
        for raw in text.lines() {
            let line = raw.trim();
            if pending.is_empty() && (line.is_empty() || line.starts_with('#') || line.starts_with(';')) {
                continue;
            }
            if let Some(cont) = line.strip_suffix('\\') {
                pending.push_str(cont);
                pending.push(' ');
                continue;
            }
            pending.push_str(line);
            let line = std::mem::take(&mut pending);
            if line.starts_with('[') {
                section = line;
            } else if section == "[Service]" {
                let (k, v) =
                    line.split_once('=').unwrap_or_else(|| panic!("{}: not Key=value: {line}", path.display()));
                service.push((k.trim().to_owned(), v.trim().to_owned()));
            }
        }
        Unit { path, text, service }
    }

    /// Every value of `key`, in order; an empty assignment resets the list
    /// (as in systemd).
    pub fn all(&self, key: &str) -> Vec<&str> {
        let mut out = Vec::new();
        for (k, v) in &self.service {
            if k == key {
                if v.is_empty() {
                    out.clear();
                } else {
                    out.push(v.as_str());
                }
            }
        }
        out
    }

    /// The last value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.all(key).last().copied()
    }

    /// Whether boolean `key` is set to yes.
    pub fn yes(&self, key: &str) -> bool {
        matches!(self.get(key), Some("yes" | "true" | "on" | "1"))
    }

    /// The words of a list-valued `key`, all its lines together.
    pub fn words(&self, key: &str) -> Vec<&str> {
        self.all(key).iter().flat_map(|v| v.split_whitespace()).collect()
    }

    /// `CapabilityBoundingSet=`: (name, number) of each capability kept.
    pub fn capabilities(&self) -> Vec<(String, u32)> {
        self.words("CapabilityBoundingSet")
            .into_iter()
            .map(|name| {
                assert!(!name.starts_with('~'), "{}: an inverted CapabilityBoundingSet= is not supported here", name);
                let n = CAPS.iter().position(|c| *c == name).unwrap_or_else(|| panic!("unknown capability {name}"));
                (name.to_owned(), n as u32)
            })
            .collect()
    }

    /// The bounding set as the kernel shows it (`CapBnd:` in /proc/PID/status).
    pub fn capability_mask(&self) -> u64 {
        self.capabilities().iter().fold(0, |m, (_, n)| m | 1 << n)
    }

    /// `UMask=`, or systemd's default 0022.
    pub fn umask(&self) -> u32 {
        self.get("UMask").map(|v| u32::from_str_radix(v, 8).expect("octal UMask")).unwrap_or(0o022)
    }

    /// `RestrictAddressFamilies=` as numbers (an allow list).
    pub fn address_families(&self) -> Vec<u32> {
        self.words("RestrictAddressFamilies")
            .into_iter()
            .map(|f| match f {
                "AF_UNIX" | "AF_LOCAL" => libc::AF_UNIX as u32,
                "AF_INET" => libc::AF_INET as u32,
                "AF_INET6" => libc::AF_INET6 as u32,
                "AF_NETLINK" => libc::AF_NETLINK as u32,
                "AF_PACKET" => libc::AF_PACKET as u32,
                other => panic!("RestrictAddressFamilies: {other} is not supported here"),
            })
            .collect()
    }

    /// The system calls `SystemCallFilter=` allows, by name: systemd starts
    /// an allow list from `@default`, then each line adds its names, or
    /// removes them when it starts with `~`, in file order.
    pub fn allowed_syscalls(&self) -> BTreeSet<String> {
        let lines = self.all("SystemCallFilter");
        assert!(
            lines.first().is_some_and(|l| !l.starts_with('~')),
            "SystemCallFilter= must start as an allow list for this sandbox"
        );
        let groups = syscall_groups();
        let mut allowed = expand(&groups, "@default");
        for line in lines {
            let (remove, names) = match line.strip_prefix('~') {
                Some(rest) => (true, rest),
                None => (false, line),
            };
            for name in names.split_whitespace() {
                assert!(!name.contains(':'), "SystemCallFilter: {name}: an errno per call is not supported here");
                let set = expand(&groups, name);
                if remove {
                    allowed.retain(|s| !set.contains(s));
                } else {
                    allowed.extend(set);
                }
            }
        }
        allowed
    }

    /// `ExecStart=`'s words, without the executable.
    pub fn exec_start_args(&self) -> Vec<String> {
        let line = self.get("ExecStart").expect("ExecStart=");
        line.split_whitespace().skip(1).map(str::to_owned).collect()
    }

    /// The value of `--flag` in `ExecStart=`.
    pub fn exec_start_option(&self, flag: &str) -> Option<String> {
        let args = self.exec_start_args();
        args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1).cloned())
    }
}

/// Capability names by number (linux/capability.h).
const CAPS: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// systemd's syscall groups, `@name` -> members (names or `@groups`), as
/// this systemd has them (`systemd-analyze syscall-filter`).
pub fn syscall_groups() -> BTreeMap<String, Vec<String>> {
    let text = crate::sh(&["systemd-analyze", "syscall-filter", "--no-pager"]);
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current = None;
    for line in text.lines() {
        let t = line.trim();
        if line.starts_with('@') {
            current = Some(t.to_owned());
            groups.entry(t.to_owned()).or_default();
        } else if t.is_empty() {
            current = None;
        } else if !t.starts_with('#') {
            if let Some(g) = &current {
                groups.get_mut(g).unwrap().push(t.to_owned());
            }
        }
    }
    assert!(
        groups.contains_key("@system-service"),
        "systemd-analyze syscall-filter listed no @system-service:\n{text}"
    );
    groups
}

fn expand(groups: &BTreeMap<String, Vec<String>>, name: &str) -> BTreeSet<String> {
    if !name.starts_with('@') {
        return BTreeSet::from([name.to_owned()]);
    }
    let members = groups.get(name).unwrap_or_else(|| panic!("no syscall group {name}"));
    members.iter().flat_map(|m| expand(groups, m)).collect()
}

/// This architecture's system call numbers by name, from the kernel
/// headers (`__NR_name`). Names another architecture has are absent.
pub fn syscall_numbers() -> BTreeMap<String, u32> {
    if !cfg!(target_arch = "x86_64") {
        panic!("the syscall filter reproduction knows x86_64 only");
    }
    let header = "/usr/include/x86_64-linux-gnu/asm/unistd_64.h";
    let text = std::fs::read_to_string(header)
        .unwrap_or_else(|e| panic!("{header}: {e} (Debian package linux-libc-dev; scripts/setup.sh installs it)"));
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("#define")).then_some(())?;
            let name = w.next()?.strip_prefix("__NR_")?;
            Some((name.to_owned(), w.next()?.parse().ok()?))
        })
        .collect()
}

// Classic BPF for seccomp: A = a 32-bit word of struct seccomp_data.
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const fn off_arg(i: u32) -> u32 {
    16 + 8 * i // the low half of args[i] (little endian)
}
const LD: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const JEQ: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JGE: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const JSET: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
const AND: u16 = (libc::BPF_ALU | libc::BPF_AND | libc::BPF_K) as u16;
const RET: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
const KILL: u32 = libc::SECCOMP_RET_KILL_PROCESS;
const fn errno(e: i32) -> u32 {
    libc::SECCOMP_RET_ERRNO | e as u32
}
const NS_FLAGS: u32 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | 0x80/* CLONE_NEWTIME */) as u32;

fn op(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt: 0, jf: 0, k }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// A filter that runs `body` for system call `nr` and falls through (to
/// ALLOW at the end of the filter) when `body` does not return.
fn on_call(nr: i64, body: Vec<libc::sock_filter>) -> Vec<libc::sock_filter> {
    let skip = u8::try_from(body.len()).expect("short body");
    let mut f = vec![op(LD, OFF_NR), jump(JEQ, nr as u32, 0, skip)];
    f.extend(body);
    f
}

fn filter(sections: Vec<Vec<libc::sock_filter>>) -> Vec<libc::sock_filter> {
    let mut f: Vec<_> = sections.into_iter().flatten().collect();
    f.push(op(RET, ALLOW));
    f
}

/// The unit's restrictions for one daemon, prepared before the fork (the
/// child may only make system calls).
#[derive(Debug, Clone)]
pub struct Sandbox {
    /// Capabilities to drop from the bounding set (all but the unit's).
    drop_caps: Vec<u32>,
    umask: libc::mode_t,
    no_new_privs: bool,
    /// `hidepid=` for a private /proc, from `ProtectProc=`.
    hidepid: Option<CString>,
    filters: Vec<Vec<libc::sock_filter>>,
    /// The capability sets the daemon must end up with.
    pub capabilities: u64,
}

impl Sandbox {
    pub fn from_unit(unit: &Unit) -> Sandbox {
        let last: u32 =
            std::fs::read_to_string("/proc/sys/kernel/cap_last_cap").expect("cap_last_cap").trim().parse().unwrap();
        let keep = unit.capability_mask();
        let drop_caps = (0..=last).filter(|c| keep & (1 << c) == 0).collect();
        let mut filters = Vec::new();

        let numbers = syscall_numbers();
        let allowed = unit.allowed_syscalls();
        if !allowed.is_empty() {
            assert_eq!(unit.get("SystemCallArchitectures"), Some("native"), "only native is reproduced");
            // Other ABIs (i386, x32) are killed, as SystemCallArchitectures=native does.
            let mut f = vec![
                op(LD, OFF_ARCH),
                jump(JEQ, AUDIT_ARCH_X86_64, 1, 0),
                op(RET, KILL),
                op(LD, OFF_NR),
                jump(JGE, X32_SYSCALL_BIT, 0, 1),
                op(RET, KILL),
            ];
            for nr in allowed.iter().filter_map(|name| numbers.get(name)) {
                f.extend([jump(JEQ, *nr, 0, 1), op(RET, ALLOW)]);
            }
            f.push(op(RET, KILL));
            filters.push(f);
        }
        let families = unit.address_families();
        if !families.is_empty() {
            let n = families.len();
            let mut body = vec![op(LD, off_arg(0))];
            for (i, fam) in families.iter().enumerate() {
                body.push(jump(JEQ, *fam, (n - i) as u8, 0));
            }
            body.push(op(RET, errno(libc::EAFNOSUPPORT)));
            filters.push(filter(vec![on_call(libc::SYS_socket, body)]));
        }
        match unit.get("RestrictNamespaces") {
            Some("yes" | "true") => {
                let flags = || vec![op(LD, off_arg(0)), jump(JSET, NS_FLAGS, 0, 1), op(RET, errno(libc::EPERM))];
                filters.push(filter(vec![
                    on_call(libc::SYS_clone3, vec![op(RET, errno(libc::ENOSYS))]),
                    on_call(libc::SYS_clone, flags()),
                    on_call(libc::SYS_unshare, flags()),
                    on_call(libc::SYS_setns, vec![op(RET, errno(libc::EPERM))]),
                ]))
            }
            None | Some("no" | "false") => {}
            Some(other) => panic!("RestrictNamespaces={other} is not reproduced"),
        }
        if unit.yes("MemoryDenyWriteExecute") {
            let wx = (libc::PROT_WRITE | libc::PROT_EXEC) as u32;
            let x = || vec![op(LD, off_arg(2)), jump(JSET, libc::PROT_EXEC as u32, 0, 1), op(RET, errno(libc::EPERM))];
            filters.push(filter(vec![
                on_call(
                    libc::SYS_mmap,
                    vec![op(LD, off_arg(2)), op(AND, wx), jump(JEQ, wx, 0, 1), op(RET, errno(libc::EPERM))],
                ),
                on_call(libc::SYS_mprotect, x()),
                on_call(libc::SYS_pkey_mprotect, x()),
            ]));
        }
        let hidepid = match unit.get("ProtectProc") {
            None | Some("default") => None,
            Some(v @ ("invisible" | "noaccess" | "ptraceable")) => Some(CString::new(format!("hidepid={v}")).unwrap()),
            Some(other) => panic!("ProtectProc={other}?"),
        };
        assert_eq!(
            unit.get("ProtectSystem"),
            Some("strict"),
            "the write restriction reproduced is ProtectSystem=strict's"
        );
        Sandbox {
            drop_caps,
            umask: unit.umask() as libc::mode_t,
            no_new_privs: unit.yes("NoNewPrivileges"),
            hidepid,
            filters,
            capabilities: keep,
        }
    }

    /// `program` run inside network namespace `netns` under this sandbox,
    /// with only the `writable` directories (and what is below them)
    /// writable.
    pub fn command(&self, netns: &str, writable: &[&Path], program: &Path) -> Command {
        let ns_path = Path::new("/run/netns").join(netns);
        let ns = File::open(&ns_path).unwrap_or_else(|e| panic!("{}: {e}", ns_path.display()));
        let writable: Vec<CString> =
            writable.iter().map(|p| CString::new(p.as_os_str().as_bytes()).expect("path without NUL")).collect();
        let this = self.clone();
        let mut cmd = Command::new(program);
        // SAFETY: the closure runs in the forked child before exec and only
        // makes system calls on data prepared here; an error aborts the spawn.
        unsafe {
            cmd.pre_exec(move || this.enter(&ns, &writable));
        }
        cmd
    }

    /// In the child: every step checked, so that nothing runs half sandboxed.
    fn enter(&self, ns: &File, writable: &[CString]) -> std::io::Result<()> {
        use std::io::Error;
        let check = |r: libc::c_long| if r < 0 { Err(Error::last_os_error()) } else { Ok(()) };
        let root = c"/";
        let proc_ = c"/proc";
        // SAFETY: plain system calls with pointers to live, NUL-terminated
        // strings and structures owned by this frame or by `self`.
        unsafe {
            check(libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) as _)?;
            // A mount namespace of its own, nothing propagating back; only
            // then are mounts touched.
            check(libc::unshare(libc::CLONE_NEWNS) as _)?;
            check(libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_SLAVE,
                std::ptr::null(),
            ) as _)?;
            if let Some(opts) = &self.hidepid {
                check(libc::mount(
                    c"proc".as_ptr(),
                    proc_.as_ptr(),
                    c"proc".as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                    opts.as_ptr().cast(),
                ) as _)?;
            }
            for w in writable {
                check(libc::mount(
                    w.as_ptr(),
                    w.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                ) as _)?;
            }
            // Per-mount flags of this namespace's copies: the host's mounts
            // are not touched.
            let ro = MountAttr { attr_set: MOUNT_ATTR_RDONLY, ..Default::default() };
            check(mount_setattr(root, &ro))?;
            let rw = MountAttr { attr_clr: MOUNT_ATTR_RDONLY, ..Default::default() };
            for w in writable {
                check(mount_setattr(w, &rw))?;
            }
            libc::umask(self.umask);
            // prctl is variadic: every argument a full unsigned long.
            const Z: libc::c_ulong = 0;
            for &cap in &self.drop_caps {
                check(libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, Z, Z, Z) as _)?;
            }
            check(libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong, Z, Z, Z) as _)?;
            // A filter implies it too when CAP_SYS_ADMIN is dropped, as here.
            if self.no_new_privs || !self.filters.is_empty() {
                check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as libc::c_ulong, Z, Z, Z) as _)?;
            }
            for f in &self.filters {
                let prog = libc::sock_fprog { len: f.len() as u16, filter: f.as_ptr() as *mut _ };
                check(libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER as libc::c_ulong,
                    &prog as *const libc::sock_fprog as libc::c_ulong,
                    Z,
                    Z,
                ) as _)?;
            }
        }
        Ok(())
    }
}

const MOUNT_ATTR_RDONLY: u64 = 1;

#[repr(C)]
#[derive(Default)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// mount_setattr(2) on `path` and every mount below it.
unsafe fn mount_setattr(path: &std::ffi::CStr, attr: &MountAttr) -> libc::c_long {
    libc::syscall(
        libc::SYS_mount_setattr,
        libc::AT_FDCWD,
        path.as_ptr(),
        libc::AT_RECURSIVE as libc::c_uint,
        attr as *const MountAttr,
        std::mem::size_of::<MountAttr>(),
    )
}

/// `/proc/PID/status`, `Key:` -> value.
pub fn proc_status(pid: u32) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    text.lines().filter_map(|l| l.split_once(':')).map(|(k, v)| (k.to_owned(), v.trim().to_owned())).collect()
}

/// Each thread of `pid`: (name, scheduling policy, real-time priority),
/// from /proc/PID/task/TID/stat (fields 41 and 40).
pub fn threads(pid: u32) -> Vec<(String, u32, u32)> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).expect("task dir").flatten() {
        let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else { continue };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        let name = stat[open + 1..close].to_owned();
        // Fields from the 3rd on, after the command name.
        let f: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        let field = |n: usize| f.get(n - 3).and_then(|v| v.parse().ok()).unwrap_or(u32::MAX);
        out.push((name, field(41), field(40)));
    }
    out
}
