//! What a result was measured on, printed and written beside the figures:
//! the CPU model, the kernel, the SRSO mitigation (it doubles the cost of a
//! return on affected AMD CPUs, which BPF helpers and XDP programs are full
//! of), and, over a measured phase, the CPU time stolen by the hypervisor
//! and the load: a late BFD detection on a noisy VM is read against them.
use std::fs;

/// The machine itself.
pub fn describe() -> serde_json::Value {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_string()))
        })
        .unwrap_or_else(|| "unknown".into());
    let read = |p: &str| fs::read_to_string(p).map(|s| s.trim().to_string()).unwrap_or_else(|_| "unknown".into());
    serde_json::json!({
        "cpu": cpu,
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "kernel": read("/proc/sys/kernel/osrelease"),
        "srso": read("/sys/devices/system/cpu/vulnerabilities/spec_rstack_overflow"),
    })
}

/// One line for a results table.
pub fn line() -> String {
    let m = describe();
    format!(
        "machine: {} x {}, kernel {}, SRSO: {}",
        m["cpus"],
        m["cpu"].as_str().unwrap_or("?"),
        m["kernel"].as_str().unwrap_or("?"),
        m["srso"].as_str().unwrap_or("?")
    )
}

/// The system's CPU counters (all CPUs, in ticks) at one moment.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    total: u64,
    steal: u64,
}

impl Sample {
    pub fn now() -> Sample {
        let stat = fs::read_to_string("/proc/stat").expect("/proc/stat");
        // cpu  user nice system idle iowait irq softirq steal guest guest_nice
        let v: Vec<u64> = stat
            .lines()
            .next()
            .expect("/proc/stat's first line")
            .split_whitespace()
            .skip(1)
            .map(|x| x.parse().expect("a /proc/stat counter"))
            .collect();
        // Guest time is already counted in user and nice.
        Sample { total: v.iter().take(8).sum(), steal: v.get(7).copied().unwrap_or(0) }
    }

    /// Since `earlier`: the share of CPU time stolen (percent), and the
    /// 1-minute load average now.
    pub fn since(&self, earlier: &Sample) -> serde_json::Value {
        let total = self.total.saturating_sub(earlier.total).max(1);
        let steal = 100.0 * self.steal.saturating_sub(earlier.steal) as f64 / total as f64;
        let load: f64 = fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|x| x.parse().ok()))
            .unwrap_or(f64::NAN);
        serde_json::json!({ "steal_pct": (steal * 100.0).round() / 100.0, "load1": load })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_machine_and_a_phase_are_described_from_proc() {
        let m = describe();
        assert_eq!(m["kernel"], fs::read_to_string("/proc/sys/kernel/osrelease").unwrap().trim());
        assert!(m["cpus"].as_u64().unwrap() >= 1);
        assert!(line().starts_with("machine: "), "{}", line());
        let t0 = Sample::now();
        let busy = std::time::Instant::now();
        while busy.elapsed() < std::time::Duration::from_millis(50) {}
        let p = Sample::now().since(&t0);
        let steal = p["steal_pct"].as_f64().unwrap();
        assert!((0.0..=100.0).contains(&steal), "{p}");
        assert!(p["load1"].as_f64().unwrap() >= 0.0, "{p}");
    }
}
