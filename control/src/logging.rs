//! The log: `tracing` events (and the `log` records of dependencies and of
//! the datapath's aya-log, through tracing-subscriber's bridge) to stderr,
//! filtered per target as Open vSwitch's vlog is per module.
//!
//! - `XGW_LOG` sets the levels at start: a bare level is xgw's own
//!   (`debug`), `target=level` any target's (`aya=debug`), comma-separated.
//!   Targets not named stay at `warn`: dependencies' debug chatter (aya's BTF
//!   relocation lines, a hundred and more per start) shows only when its
//!   target is named. A value that does not parse stops the program, naming
//!   it, instead of being ignored.
//! - `xgw log set <target>=<level>` changes them in a running daemon (like
//!   `ovs-appctl vlog/set`) through tracing-subscriber's reload layer; `xgw
//!   log show` lists them.
//! - Under systemd (`JOURNAL_STREAM` names our stderr), each line starts
//!   with its syslog priority as sd-daemon(3) prefixes it (`<3>` error,
//!   `<4>` warning, `<6>` info, `<7>` debug), which journald reads, so
//!   `journalctl -p warning` picks warnings out; the timestamp is left to
//!   journald. Prefixes rather than tracing-journald's native protocol: the
//!   unit's stderr already goes to the journal, nothing else is needed (no
//!   socket, no dependency), and the lines are the same text a terminal shows.
//!
//! The datapath's aya-log records have the target `xgw_datapath::<module>`,
//! which `xgw` covers (targets match by prefix, as in `RUST_LOG`).
use std::{
    collections::BTreeMap,
    fmt,
    str::FromStr,
    sync::{Mutex, OnceLock},
};

use anyhow::{anyhow, bail, Result};
use serde::{Deserialize, Serialize};
use tracing::{level_filters::LevelFilter, Event, Subscriber};
use tracing_subscriber::{
    fmt::{format::Writer, FmtContext, FormatEvent, FormatFields},
    prelude::*,
    registry::LookupSpan,
    reload, EnvFilter, Registry,
};

/// The environment variable read at start.
pub const ENV: &str = "XGW_LOG";
/// xgw's own target: the daemon, the CLI, and the datapath's records.
pub const XGW: &str = "xgw";
/// The datapath's aya-log records' target.
pub const DATAPATH: &str = "xgw_datapath";
/// xgw's level when nothing says otherwise.
const XGW_DEFAULT: LevelFilter = LevelFilter::INFO;
/// Every target not named.
const OTHERS: LevelFilter = LevelFilter::WARN;

/// One `target=level` (or a bare level: xgw's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    pub target: String,
    pub level: LevelFilter,
}

fn parse_level(s: &str) -> Result<LevelFilter> {
    match s.to_ascii_lowercase().as_str() {
        "off" => Ok(LevelFilter::OFF),
        "error" | "err" => Ok(LevelFilter::ERROR),
        "warn" | "warning" => Ok(LevelFilter::WARN),
        "info" => Ok(LevelFilter::INFO),
        "debug" | "dbg" => Ok(LevelFilter::DEBUG),
        "trace" => Ok(LevelFilter::TRACE),
        _ => bail!("{s:?} is not a level (off, error, warn, info, debug, trace)"),
    }
}

fn level_name(l: LevelFilter) -> &'static str {
    match l {
        LevelFilter::OFF => "off",
        LevelFilter::ERROR => "error",
        LevelFilter::WARN => "warn",
        LevelFilter::INFO => "info",
        LevelFilter::DEBUG => "debug",
        _ => "trace",
    }
}

impl FromStr for Directive {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Directive> {
        let s = s.trim();
        let (target, level) = match s.split_once('=') {
            Some((t, l)) => (t.trim(), l.trim()),
            None => (XGW, s),
        };
        // A Rust module path: what a `tracing` or `log` target is.
        let valid = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':' || c == '-';
        if target.is_empty() || !target.chars().all(valid) {
            bail!("{target:?} is not a target (a crate or module path such as xgw, aya or xgw::daemon::bfd)");
        }
        Ok(Directive { target: target.to_owned(), level: parse_level(level)? })
    }
}

impl fmt::Display for Directive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.target, level_name(self.level))
    }
}

impl Serialize for Directive {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Directive {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Directive, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(|e: anyhow::Error| serde::de::Error::custom(format!("{e:#}")))
    }
}

/// The levels in force: xgw's, and those of the targets named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Levels {
    /// Target -> level; always holds `xgw`.
    targets: BTreeMap<String, LevelFilter>,
}

impl Default for Levels {
    fn default() -> Levels {
        Levels { targets: [(XGW.to_owned(), XGW_DEFAULT)].into() }
    }
}

impl Levels {
    /// From `XGW_LOG`'s value (empty: the defaults).
    pub fn parse(spec: &str) -> Result<Levels> {
        let mut levels = Levels::default();
        for d in spec.split(',').filter(|d| !d.trim().is_empty()) {
            levels.set(&d.parse()?);
        }
        Ok(levels)
    }

    pub fn set(&mut self, d: &Directive) {
        self.targets.insert(d.target.clone(), d.level);
    }

    /// The level events of `target` pass at: the longest target named that
    /// is a prefix of it, as the filter decides.
    pub fn level_for(&self, target: &str) -> LevelFilter {
        self.targets
            .iter()
            .filter(|(t, _)| target.starts_with(t.as_str()))
            .max_by_key(|(t, _)| t.len())
            .map_or(OTHERS, |(_, l)| *l)
    }

    /// The `tracing-subscriber` filter: `warn` for every target not named.
    fn filter(&self) -> Result<EnvFilter> {
        let spec = self.to_string();
        EnvFilter::builder().parse(&spec).map_err(|e| anyhow!("log filter {spec:?}: {e}"))
    }

    pub fn view(&self) -> LogView {
        LogView {
            filter: self.to_string(),
            others: level_name(OTHERS).to_owned(),
            targets: self.targets.iter().map(|(t, l)| (t.clone(), level_name(*l).to_owned())).collect(),
        }
    }
}

impl fmt::Display for Levels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", level_name(OTHERS))?;
        for (t, l) in &self.targets {
            write!(f, ",{t}={}", level_name(*l))?;
        }
        Ok(())
    }
}

/// What `xgw log show` and `xgw log set` print.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogView {
    /// The whole filter, in `XGW_LOG`'s syntax.
    pub filter: String,
    /// The level of every target not named.
    pub others: String,
    /// Target -> level.
    pub targets: BTreeMap<String, String>,
}

/// The running process's filter, for `set`.
struct Control {
    levels: Mutex<Levels>,
    handle: reload::Handle<EnvFilter, Registry>,
}

static CONTROL: OnceLock<Control> = OnceLock::new();

/// Sets up the log from `XGW_LOG`; an invalid value is an error naming it.
pub fn init() -> Result<()> {
    let spec = std::env::var(ENV).unwrap_or_default();
    let levels = Levels::parse(&spec).map_err(|e| anyhow!("{ENV}={spec:?}: {e:#}"))?;
    let (filter, handle) = reload::Layer::new(levels.filter()?);
    let journal = journal_stream();
    let stderr = std::io::stderr;
    let (plain, journald) = if journal {
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(stderr)
            .with_ansi(false)
            .event_format(Priority(tracing_subscriber::fmt::format().without_time()));
        (None, Some(layer))
    } else {
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
        (Some(tracing_subscriber::fmt::layer().with_writer(stderr).with_ansi(ansi)), None)
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(plain)
        .with(journald)
        .try_init()
        .map_err(|e| anyhow!("setting up the log: {e}"))?;
    bridge_max_level(&levels);
    let _ = CONTROL.set(Control { levels: Mutex::new(levels), handle });
    Ok(())
}

/// The `log` crate's records (dependencies, aya-log) are let through up to
/// the most verbose level any target has: the bridge installed at start
/// fixed it at the levels then.
fn bridge_max_level(levels: &Levels) {
    let max = levels.targets.values().copied().chain([OTHERS]).max().unwrap_or(OTHERS);
    ::log::set_max_level(match max {
        LevelFilter::OFF => ::log::LevelFilter::Off,
        LevelFilter::ERROR => ::log::LevelFilter::Error,
        LevelFilter::WARN => ::log::LevelFilter::Warn,
        LevelFilter::INFO => ::log::LevelFilter::Info,
        LevelFilter::DEBUG => ::log::LevelFilter::Debug,
        _ => ::log::LevelFilter::Trace,
    });
}

fn control() -> Result<&'static Control> {
    CONTROL.get().ok_or_else(|| anyhow!("the log of this process is not set up by xgw"))
}

/// The levels in force.
pub fn levels() -> Result<Levels> {
    Ok(control()?.levels.lock().expect("never poisoned").clone())
}

/// The datapath's aya-log level (`AYA_LOG_LEVEL`, aya-log-common's
/// numbering: 0 off, 1 error ... 5 trace), from the level `xgw_datapath`
/// has when the programs are loaded; `None` if this process's log is not
/// xgw's (every level stays compiled in). A later `xgw log set` can quiet
/// the datapath's records, not enable levels pruned at load.
pub fn datapath_level() -> Option<u8> {
    let level = levels().ok()?.level_for(DATAPATH);
    Some(match level {
        LevelFilter::OFF => 0,
        LevelFilter::ERROR => 1,
        LevelFilter::WARN => 2,
        LevelFilter::INFO => 3,
        LevelFilter::DEBUG => 4,
        _ => 5,
    })
}

/// What `xgw log show` prints.
pub fn show() -> Result<LogView> {
    Ok(levels()?.view())
}

/// Applies `directives` to the running filter, all or none.
pub fn set(directives: &[Directive]) -> Result<LogView> {
    let c = control()?;
    let mut levels = c.levels.lock().expect("never poisoned");
    let mut next = levels.clone();
    for d in directives {
        next.set(d);
    }
    c.handle.reload(next.filter()?).map_err(|e| anyhow!("log: reloading the filter: {e}"))?;
    bridge_max_level(&next);
    *levels = next;
    Ok(levels.view())
}

/// Whether stderr is the journal's stream: `JOURNAL_STREAM` is
/// `<device>:<inode>` of the stream systemd connected (systemd.exec(5));
/// a unit that redirects stderr elsewhere keeps the variable but not the
/// stream.
fn journal_stream() -> bool {
    let Some((dev, ino)) = std::env::var("JOURNAL_STREAM").ok().and_then(|v| {
        let (d, i) = v.split_once(':')?;
        Some((d.parse::<u64>().ok()?, i.parse::<u64>().ok()?))
    }) else {
        return false;
    };
    // SAFETY: fstat into a zeroed struct on our own stderr.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(libc::STDERR_FILENO, &mut st) } != 0 {
        return false;
    }
    st.st_dev == dev && st.st_ino == ino
}

/// sd-daemon(3)'s `<N>` syslog priority before each line.
struct Priority<F>(F);

impl<S, N, F> FormatEvent<S, N> for Priority<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let priority = match *event.metadata().level() {
            tracing::Level::ERROR => 3,
            tracing::Level::WARN => 4,
            tracing::Level::INFO => 6,
            _ => 7,
        };
        write!(writer, "<{priority}>")?;
        self.0.format_event(ctx, writer, event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_level_is_xgws_and_other_targets_stay_at_warn() {
        let l = Levels::parse("debug").unwrap();
        assert_eq!(l.to_string(), "warn,xgw=debug");
        assert_eq!(l.level_for("xgw::daemon::bfd"), LevelFilter::DEBUG);
        assert_eq!(l.level_for("xgw_datapath::main"), LevelFilter::DEBUG);
        assert_eq!(l.level_for("aya_obj::btf"), LevelFilter::WARN);
        assert_eq!(Levels::parse("").unwrap(), Levels::default());
        assert_eq!(Levels::default().to_string(), "warn,xgw=info");
    }

    #[test]
    fn a_named_target_gets_its_level_the_longest_name_deciding() {
        let l = Levels::parse(" info, aya=debug ,xgw::daemon::bfd=trace,xgw_datapath=error").unwrap();
        assert_eq!(l.to_string(), "warn,aya=debug,xgw=info,xgw::daemon::bfd=trace,xgw_datapath=error");
        assert_eq!(l.level_for("aya::maps"), LevelFilter::DEBUG);
        assert_eq!(l.level_for("xgw::daemon::bfd"), LevelFilter::TRACE);
        assert_eq!(l.level_for("xgw::daemon"), LevelFilter::INFO);
        assert_eq!(l.level_for("xgw_datapath::main"), LevelFilter::ERROR);
        // The filter tracing-subscriber builds from it parses.
        l.filter().unwrap();
    }

    #[test]
    fn a_bad_value_is_refused_naming_what_is_wrong() {
        let e = |s: &str| format!("{:#}", Levels::parse(s).unwrap_err());
        assert_eq!(e("loud"), "\"loud\" is not a level (off, error, warn, info, debug, trace)");
        assert_eq!(e("aya=loud"), "\"loud\" is not a level (off, error, warn, info, debug, trace)");
        assert!(e("=debug").contains("\"\" is not a target"), "{}", e("=debug"));
        assert!(e("a b=debug").contains("\"a b\" is not a target"));
    }

    #[test]
    fn a_directive_is_a_string_in_json() {
        let d: Directive = serde_json::from_str("\"aya=debug\"").unwrap();
        assert_eq!(d, Directive { target: "aya".into(), level: LevelFilter::DEBUG });
        assert_eq!(serde_json::to_string(&d).unwrap(), "\"aya=debug\"");
        assert!(serde_json::from_str::<Directive>("\"aya=loud\"").is_err());
    }
}
