//! The transmit and detection half of one BFD session (RFC 5880 sections
//! 6.8.1-6.8.7), pure: no I/O, no clock. The receive half runs in XDP
//! (`xgw_common::bfd::on_receive`, applied to the session map); this side
//! reads what it wrote (`Rx`) and decides, for a given time, which packet
//! to send and whether the detection time has expired.
//!
//! Asynchronous mode only (no Demand mode, no authentication).
use xgw_common::bfd::{self, Control, Diag, State};

/// Per-session settings, in milliseconds as Open vSwitch and FRR configure them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Config {
    /// Desired Min TX Interval once Up.
    pub min_tx_ms: u32,
    /// Required Min RX Interval.
    pub min_rx_ms: u32,
    /// Detect Mult.
    pub mult: u8,
    /// Advertise a Required Min Echo RX Interval of `min_rx_ms` and reflect
    /// the peer's echo packets in XDP (single-hop only).
    pub echo: bool,
}

impl Default for Config {
    /// Open vSwitch's defaults.
    fn default() -> Config {
        Config { min_tx_ms: bfd::ovs::MIN_TX_MS, min_rx_ms: bfd::ovs::MIN_RX_MS, mult: bfd::ovs::MULT, echo: false }
    }
}

/// Which setting is out of range, for an error that names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("bfd min_tx must be 1..=60000 ms, got {0}")]
    MinTx(u32),
    #[error("bfd min_rx must be 1..=60000 ms, got {0}")]
    MinRx(u32),
    #[error("bfd mult must be 1..=255, got 0")]
    Mult,
}

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=60_000).contains(&self.min_tx_ms) {
            return Err(ConfigError::MinTx(self.min_tx_ms));
        }
        if !(1..=60_000).contains(&self.min_rx_ms) {
            return Err(ConfigError::MinRx(self.min_rx_ms));
        }
        if self.mult == 0 {
            return Err(ConfigError::Mult);
        }
        Ok(())
    }
    fn tx_us(&self) -> u32 {
        self.min_tx_ms * 1000
    }
    fn rx_us(&self) -> u32 {
        self.min_rx_ms * 1000
    }
}

/// What the datapath last wrote for this session (a copy of the kernel-owned
/// half of `BfdSession`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rx {
    pub state: u8,
    pub diag: u8,
    pub remote_state: u8,
    pub remote_diag: u8,
    pub remote_disc: u32,
    pub remote_min_tx: u32,
    pub remote_min_rx: u32,
    pub remote_min_echo_rx: u32,
    pub remote_mult: u8,
    pub remote_flags: u8,
    pub down_ack: u32,
    pub poll_seq: u32,
    pub final_seq: u32,
    pub rx_packets: u64,
    pub last_rx_ns: u64,
}

/// What `tick` asks the caller to do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Actions {
    /// Write this value to the session's `ctl_down_seq`: the detection time
    /// expired, the datapath must treat the session as Down.
    pub down_seq: Option<u32>,
    /// Send this control packet now.
    pub send: Option<Control>,
    /// The state changed: the flap count and time of change are to be kept
    /// beside the session (`ctl_flaps`, `ctl_changed_ns`).
    pub changed: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Poll {
    /// `Rx::final_seq` when the poll began: any newer Final ends it.
    final_seq: u32,
    /// Required Min RX in force before the change: detection keeps using the
    /// larger of old and new until the peer has acknowledged (6.8.3).
    old_rx_us: u32,
    /// Desired Min TX before the change: an increase takes effect on the
    /// wire only once the peer has acknowledged (6.8.3).
    old_tx_us: u32,
}

/// One session's transmit/detection state.
#[derive(Clone, Debug)]
pub struct Session {
    pub config: Config,
    pub local_disc: u32,
    /// The `ctl_down_seq` this side last wrote.
    down_seq: u32,
    /// Desired Min TX / Required Min RX we advertise now.
    adv_tx_us: u32,
    adv_rx_us: u32,
    poll: Option<Poll>,
    /// `Rx::poll_seq` last answered with a Final.
    finals_sent: u32,
    next_tx_ns: u64,
    /// The last periodic packet: when it went out, the interval its
    /// successor was scheduled with and the jitter fraction drawn for it.
    /// A shorter interval learnt meanwhile pulls the next packet in.
    last_tx_ns: u64,
    sched_us: u32,
    sched_frac: f64,
    /// The state of the last tick: a change is sent at once and, to or
    /// from Up, counted as a flap.
    last_state: State,
    pub flaps: u64,
    /// When `last_state` began (CLOCK_MONOTONIC).
    pub changed_ns: u64,
    pub tx_packets: u64,
}

/// The session as `bfd/show` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct View {
    pub state: State,
    pub diag: Diag,
    pub remote_state: State,
    pub remote_diag: Diag,
    pub remote_disc: u32,
}

impl Session {
    pub fn new(config: Config, local_disc: u32, now_ns: u64) -> Session {
        Session {
            config,
            local_disc,
            down_seq: 0,
            adv_tx_us: config.tx_us().max(bfd::SLOW_TX_US),
            adv_rx_us: config.rx_us(),
            poll: None,
            finals_sent: 0,
            next_tx_ns: now_ns,
            last_tx_ns: now_ns,
            sched_us: u32::MAX,
            sched_frac: 1.0,
            last_state: State::Down,
            flaps: 0,
            changed_ns: now_ns,
            tx_packets: 0,
        }
    }

    /// Takes over a session a previous controller ran (its half is in the
    /// pinned session map): same discriminator, the intervals it advertised,
    /// its pending Down if any, and the datapath's state as the starting
    /// point, so nothing on the wire changes and no flap is counted. A Poll
    /// it may have had in flight is not resumed: the peer accepts the values
    /// in every packet, and a change still owed is polled by the next tick.
    pub fn adopt(
        config: Config,
        local_disc: u32,
        advertised: (u32, u32),
        down_seq: u32,
        (flaps, changed_ns): (u64, u64),
        rx: &Rx,
        now_ns: u64,
    ) -> Session {
        let mut s = Session::new(config, local_disc, now_ns);
        (s.adv_tx_us, s.adv_rx_us) = advertised;
        s.down_seq = down_seq;
        s.finals_sent = rx.poll_seq;
        s.last_state = s.view(rx).state;
        // The history the previous controller kept beside the session; a
        // change it did not live to see (the datapath's, meanwhile) counts
        // from now, as it would have at its next tick.
        s.flaps = flaps;
        s.changed_ns = if changed_ns != 0 && changed_ns <= now_ns { changed_ns } else { now_ns };
        s
    }

    /// The state as of the last tick, and since when.
    pub fn last_state(&self) -> (State, u64) {
        (self.last_state, self.changed_ns)
    }

    /// Desired Min TX and Required Min RX advertised now (microseconds).
    pub fn advertised(&self) -> (u32, u32) {
        (self.adv_tx_us, self.adv_rx_us)
    }

    /// When the last periodic packet went out (the heartbeat).
    pub fn last_tx_ns(&self) -> u64 {
        self.last_tx_ns
    }

    /// The state as seen through both halves: a Down declared by detection
    /// counts from the moment it was declared, before the datapath applies it.
    pub fn view(&self, rx: &Rx) -> View {
        // Until the datapath applies a declared Down, the remote is unheard
        // of: reported Down, as Open vSwitch resets it on expiry.
        if rx.down_ack != self.down_seq {
            return View {
                state: State::Down,
                diag: Diag::ControlDetectionTimeExpired,
                remote_state: State::Down,
                remote_diag: Diag::from_bits(rx.remote_diag),
                remote_disc: 0,
            };
        }
        View {
            state: State::from_bits(rx.state),
            diag: Diag::from_bits(rx.diag),
            remote_state: State::from_bits(rx.remote_state),
            remote_diag: Diag::from_bits(rx.remote_diag),
            remote_disc: rx.remote_disc,
        }
    }

    /// Detection time for packets from the remote, in microseconds (6.8.4).
    pub fn detect_time_us(&self, rx: &Rx) -> u64 {
        let rx_us = match self.poll {
            Some(p) => p.old_rx_us.max(self.adv_rx_us),
            None => self.adv_rx_us,
        };
        bfd::detection_time_us(rx.remote_mult.max(1), rx_us, rx.remote_min_tx)
    }

    /// The interval at which we send now (6.8.7), before jitter.
    pub fn tx_interval_us(&self, rx: &Rx) -> Option<u32> {
        let ours = match self.poll {
            Some(p) if p.old_tx_us < self.adv_tx_us => p.old_tx_us,
            _ => self.adv_tx_us,
        };
        if rx.rx_packets == 0 {
            return Some(ours);
        }
        bfd::tx_interval_us(ours, rx.remote_min_rx)
    }

    /// Desired Min TX and Required Min RX to advertise in `state` (6.8.3:
    /// at least one second while not Up).
    fn wanted(&self, state: State) -> (u32, u32) {
        let tx = if state == State::Up { self.config.tx_us() } else { self.config.tx_us().max(bfd::SLOW_TX_US) };
        (tx, self.config.rx_us())
    }

    /// Changes the intervals or multiplier of a running session; a change of
    /// advertised intervals while Up goes through a Poll Sequence.
    pub fn reconfigure(&mut self, config: Config) {
        self.config = config;
    }

    /// When detection expires unless a packet arrives, while it runs
    /// (the remote heard, the session Init or Up): OVS's `Detect Time`.
    pub fn detect_deadline_ns(&self, rx: &Rx) -> Option<u64> {
        let v = self.view(rx);
        (matches!(v.state, State::Init | State::Up) && rx.rx_packets > 0)
            .then(|| rx.last_rx_ns + self.detect_time_us(rx) * 1000)
    }

    /// When the next periodic packet is due.
    pub fn next_tx_ns(&self) -> u64 {
        self.next_tx_ns
    }

    /// The flags of the packet sent next: a Final owed for a Poll
    /// received, else Poll while our own Poll Sequence runs.
    pub fn flags(&self, rx: &Rx) -> u8 {
        if rx.poll_seq != self.finals_sent && rx.rx_packets > 0 {
            bfd::FLAG_FINAL
        } else if self.poll.is_some() {
            bfd::FLAG_POLL
        } else {
            0
        }
    }

    /// The earliest time `tick` has something to do, given `rx`.
    pub fn deadline(&self, rx: &Rx) -> u64 {
        let mut d = self.next_tx_ns;
        let v = self.view(rx);
        if matches!(v.state, State::Init | State::Up) && rx.rx_packets > 0 {
            d = d.min(rx.last_rx_ns + self.detect_time_us(rx) * 1000);
        }
        d
    }

    /// Advances the session to `now_ns`. `jitter` is uniform in [0, 1).
    pub fn tick(&mut self, now_ns: u64, rx: &Rx, jitter: f64) -> Actions {
        let mut out = Actions::default();
        let mut v = self.view(rx);
        // 6.8.4: detection applies once the remote has been heard and the
        // session is not (yet) Down.
        if matches!(v.state, State::Init | State::Up)
            && rx.rx_packets > 0
            && now_ns > rx.last_rx_ns + self.detect_time_us(rx) * 1000
        {
            self.down_seq = self.down_seq.wrapping_add(1);
            out.down_seq = Some(self.down_seq);
            v = self.view(rx);
            // A poll in flight is moot once the peer is gone.
            self.poll = None;
        }
        let up = v.state == State::Up;
        if v.state != self.last_state {
            if up || self.last_state == State::Up {
                self.flaps += 1;
            }
            self.last_state = v.state;
            self.changed_ns = now_ns;
            self.next_tx_ns = now_ns;
            out.changed = true;
        }

        // Advertised intervals follow the state; while Up a change is polled.
        let (tx, rxi) = self.wanted(v.state);
        if (tx, rxi) != (self.adv_tx_us, self.adv_rx_us) {
            if up && self.poll.is_none() {
                self.poll =
                    Some(Poll { final_seq: rx.final_seq, old_rx_us: self.adv_rx_us, old_tx_us: self.adv_tx_us });
            }
            self.adv_tx_us = tx;
            self.adv_rx_us = rxi;
            // Send the new values (with P) now rather than at the old pace.
            if up {
                self.next_tx_ns = now_ns;
            }
        }
        if let Some(p) = self.poll {
            if rx.final_seq != p.final_seq {
                self.poll = None;
            }
        }

        // 6.8.7: we send at the larger of our Desired Min TX and the remote's
        // Required Min RX as they are now, not as they were when the next
        // packet was scheduled. The peer times us out on what it advertised:
        // FRR, whose Init (at its slow 1 s) brought us Up, polls 10 ms at
        // once, adopts 10 ms on our Final and expects a packet within 30 ms,
        // while ours was still due a second later.
        let interval = self.tx_interval_us(rx).unwrap_or(bfd::SLOW_TX_US);
        if interval < self.sched_us {
            let sooner = self.last_tx_ns + (interval as f64 * self.sched_frac * 1000.0) as u64;
            self.next_tx_ns = self.next_tx_ns.min(sooner);
            self.sched_us = interval;
        }

        let owe_final = rx.poll_seq != self.finals_sent && rx.rx_packets > 0;
        if owe_final || now_ns >= self.next_tx_ns {
            let mut flags = 0;
            if owe_final {
                // 6.8.7: a Final goes out at once, and never together with Poll.
                self.finals_sent = rx.poll_seq;
                flags |= bfd::FLAG_FINAL;
            } else if self.poll.is_some() {
                flags |= bfd::FLAG_POLL;
            }
            out.send = Some(Control {
                diag: v.diag,
                state: v.state,
                flags,
                detect_mult: self.config.mult,
                my_disc: self.local_disc,
                your_disc: v.remote_disc,
                desired_min_tx: self.adv_tx_us,
                required_min_rx: self.adv_rx_us,
                required_min_echo_rx: if self.config.echo { self.adv_rx_us } else { 0 },
            });
            self.tx_packets += 1;
            if now_ns >= self.next_tx_ns {
                self.schedule(now_ns, rx, jitter);
            }
        }
        out
    }

    /// 6.8.7: the next periodic packet after 75-100 % of the interval
    /// (75-90 % with Detect Mult 1). A peer asking for no packets (Required
    /// Min RX 0) is still sent one per second, so it learns our state.
    fn schedule(&mut self, now_ns: u64, rx: &Rx, jitter: f64) {
        let interval = self.tx_interval_us(rx).unwrap_or(bfd::SLOW_TX_US);
        let top = if self.config.mult == 1 { 0.90 } else { 1.0 };
        let frac = top - (top - 0.75) * jitter.clamp(0.0, 1.0);
        self.next_tx_ns = now_ns + (interval as f64 * frac * 1000.0) as u64;
        (self.last_tx_ns, self.sched_us, self.sched_frac) = (now_ns, interval, frac);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn cfg(tx: u32, rx: u32, mult: u8) -> Config {
        Config { min_tx_ms: tx, min_rx_ms: rx, mult, echo: false }
    }

    /// A remote that has sent one packet in `state` at `at_ns`.
    fn heard(state: State, local: State, at_ns: u64, remote_tx_us: u32, remote_rx_us: u32) -> Rx {
        Rx {
            state: local as u8,
            remote_state: state as u8,
            remote_disc: 0x1234,
            remote_min_tx: remote_tx_us,
            remote_min_rx: remote_rx_us,
            remote_mult: 3,
            rx_packets: 1,
            last_rx_ns: at_ns,
            ..Rx::default()
        }
    }

    #[test]
    fn config_errors_name_the_field() {
        assert_eq!(cfg(0, 10, 3).validate(), Err(ConfigError::MinTx(0)));
        assert_eq!(cfg(10, 70_000, 3).validate(), Err(ConfigError::MinRx(70_000)));
        assert_eq!(cfg(10, 10, 0).validate(), Err(ConfigError::Mult));
        assert!(ConfigError::MinRx(0).to_string().contains("min_rx"));
        assert_eq!(Config::default(), cfg(100, 1000, 3));
    }

    #[test]
    fn down_sends_at_one_second_with_zero_your_discriminator() {
        let mut s = Session::new(cfg(10, 10, 3), 0xabcd_0001, 0);
        let rx = Rx { state: State::Down as u8, ..Rx::default() };
        let a = s.tick(0, &rx, 0.0);
        let p = a.send.expect("first packet at once");
        assert_eq!((p.state, p.your_disc, p.my_disc), (State::Down, 0, 0xabcd_0001));
        assert_eq!((p.desired_min_tx, p.required_min_rx, p.detect_mult), (1_000_000, 10_000, 3));
        assert_eq!(p.flags, 0);
        // No jitter draw of 0 -> full interval; nothing before it.
        assert_eq!(s.tick(999 * MS, &rx, 0.0).send, None);
        assert!(s.tick(1000 * MS, &rx, 0.0).send.is_some());
        assert_eq!(a.down_seq, None);
    }

    #[test]
    fn jitter_is_75_to_100_percent_and_75_to_90_with_mult_1() {
        for (mult, top) in [(3u8, 1000), (1, 900)] {
            let mut s = Session::new(cfg(1000, 1000, mult), 1, 0);
            let rx = Rx { state: State::Down as u8, ..Rx::default() };
            s.tick(0, &rx, 1.0);
            assert_eq!(s.next_tx_ns, 750 * MS, "mult {mult}, jitter 1.0");
            s.tick(s.next_tx_ns, &rx, 0.0);
            assert_eq!(s.next_tx_ns, (750 + top) * MS, "mult {mult}, jitter 0.0");
        }
    }

    #[test]
    fn answers_a_poll_with_a_final_at_once_and_never_with_both_bits() {
        let mut s = Session::new(cfg(10, 10, 3), 7, 0);
        let mut rx = heard(State::Up, State::Up, 0, 10_000, 10_000);
        s.tick(0, &rx, 0.0); // Up: starts its own poll (1 s -> 10 ms)
        rx.poll_seq = 1;
        let p = s.tick(MS / 2, &rx, 0.0).send.expect("final at once, off-schedule");
        assert_eq!(p.flags, bfd::FLAG_FINAL);
        // Only one Final per Poll received.
        assert_eq!(s.tick(MS / 2 + 1, &rx, 0.0).send, None);
    }

    #[test]
    fn entering_up_polls_the_faster_interval_and_final_ends_it() {
        let mut s = Session::new(cfg(10, 10, 3), 7, 0);
        let mut rx = heard(State::Init, State::Up, 0, 1_000_000, 10_000);
        let p = s.tick(0, &rx, 0.0).send.unwrap();
        assert_eq!(p.flags, bfd::FLAG_POLL);
        assert_eq!(p.desired_min_tx, 10_000);
        assert_eq!(s.view(&rx).state, State::Up);
        // A decrease of Desired Min TX applies at once: next packet 10 ms later.
        assert_eq!(s.next_tx_ns, 10 * MS);
        let p = s.tick(10 * MS, &rx, 0.0).send.unwrap();
        assert_eq!(p.flags, bfd::FLAG_POLL, "poll repeats until Final");
        rx.final_seq = 1;
        rx.last_rx_ns = 15 * MS;
        let p = s.tick(20 * MS, &rx, 0.0).send.unwrap();
        assert_eq!(p.flags, 0, "Final received: poll over");
    }

    /// The FRR flap: Up on the remote's Init, which still carries its slow
    /// 1 s Required Min RX; its Poll then asks for 10 ms. The packet due a
    /// second later must be pulled in to 10 ms after the last one.
    #[test]
    fn a_lower_remote_min_rx_pulls_the_next_packet_in() {
        let mut s = Session::new(cfg(10, 10, 3), 7, 0);
        let mut rx = heard(State::Init, State::Up, 0, 1_000_000, 1_000_000);
        let p = s.tick(0, &rx, 0.0).send.unwrap();
        assert_eq!((p.state, p.flags), (State::Up, bfd::FLAG_POLL));
        assert_eq!(s.next_tx_ns, 1000 * MS, "the remote still asks for 1 s");
        // Its Poll: Up, 10 ms. The Final goes out at once, the next periodic
        // packet 10 ms after the last periodic one, not 1 s.
        rx = Rx { remote_state: State::Up as u8, remote_min_tx: 10_000, remote_min_rx: 10_000, ..rx };
        (rx.poll_seq, rx.rx_packets, rx.last_rx_ns) = (1, 2, MS / 5);
        assert_eq!(s.tick(MS / 5, &rx, 0.0).send.unwrap().flags, bfd::FLAG_FINAL);
        assert_eq!(s.next_tx_ns, 10 * MS);
        assert_eq!(s.tick(10 * MS - 1, &rx, 0.0).send, None);
        assert!(s.tick(10 * MS, &rx, 0.0).send.is_some());
        assert_eq!(s.next_tx_ns, 20 * MS);
        // An interval that grows is not pulled in the other way.
        rx.remote_min_rx = 50_000;
        s.tick(11 * MS, &rx, 0.0);
        assert_eq!(s.next_tx_ns, 20 * MS);
    }

    #[test]
    fn an_adopted_up_session_sends_at_once_as_before_without_a_flap() {
        let mut rx = heard(State::Up, State::Up, 0, 10_000, 10_000);
        rx.poll_seq = 4;
        // Its history comes along: 3 flaps, Up since 2 ms.
        let mut s = Session::adopt(
            cfg(10, 10, 3),
            0x55_0003,
            (10_000, 10_000),
            2,
            (3, 2 * MS),
            &Rx { down_ack: 2, ..rx },
            5 * MS,
        );
        let a = s.tick(5 * MS, &Rx { down_ack: 2, ..rx }, 0.0);
        let p = a.send.expect("at once");
        assert_eq!((p.state, p.flags, p.my_disc, p.your_disc), (State::Up, 0, 0x55_0003, 0x1234), "no Poll, no Final");
        assert_eq!((p.desired_min_tx, p.required_min_rx), (10_000, 10_000));
        assert_eq!((s.flaps, s.next_tx_ns), (3, 15 * MS));
        assert_eq!((a.changed, s.last_state()), (false, (State::Up, 2 * MS)), "adopting is no change");
        // A Down the previous controller declared and the datapath has not
        // applied yet stays declared.
        let s = Session::adopt(cfg(10, 10, 3), 1, (10_000, 10_000), 3, (0, 0), &Rx { down_ack: 2, ..rx }, 0);
        assert_eq!(s.view(&Rx { down_ack: 2, ..rx }).state, State::Down);
        // Adopted with other settings: the change is polled.
        let mut s = Session::adopt(cfg(10, 10, 3), 1, (10_000, 10_000), 0, (0, 0), &rx, 0);
        s.reconfigure(cfg(20, 20, 3));
        let p = s.tick(0, &rx, 0.0).send.unwrap();
        assert_eq!((p.flags, p.desired_min_tx), (bfd::FLAG_POLL, 20_000));
    }

    #[test]
    fn an_increase_of_min_tx_waits_for_the_final() {
        let mut s = Session::new(cfg(10, 10, 3), 7, 0);
        let mut rx = heard(State::Up, State::Up, 0, 10_000, 10_000);
        s.tick(0, &rx, 0.0);
        rx.final_seq = 1;
        s.tick(1, &rx, 0.0);
        assert_eq!(s.tx_interval_us(&rx), Some(10_000));
        s.reconfigure(cfg(50, 50, 3));
        rx.last_rx_ns = 5 * MS;
        let p = s.tick(6 * MS, &rx, 0.0).send.unwrap();
        assert_eq!((p.flags, p.desired_min_tx, p.required_min_rx), (bfd::FLAG_POLL, 50_000, 50_000));
        assert_eq!(s.tx_interval_us(&rx), Some(10_000), "old (faster) rate until the Final");
        rx.final_seq = 2;
        s.tick(7 * MS, &rx, 0.0);
        assert_eq!(s.tx_interval_us(&rx), Some(50_000));
    }

    #[test]
    fn a_decrease_of_min_rx_keeps_the_old_detection_time_until_the_final() {
        let mut s = Session::new(cfg(10, 100, 3), 7, 0);
        let mut rx = heard(State::Up, State::Up, 0, 10_000, 10_000);
        s.tick(0, &rx, 0.0);
        rx.final_seq = 1;
        s.tick(1, &rx, 0.0);
        assert_eq!(s.detect_time_us(&rx), 300_000);
        s.reconfigure(cfg(10, 10, 3));
        s.tick(2, &rx, 0.0);
        assert_eq!(s.detect_time_us(&rx), 300_000);
        rx.final_seq = 2;
        s.tick(3, &rx, 0.0);
        assert_eq!(s.detect_time_us(&rx), 30_000);
    }

    #[test]
    fn detection_expiry_declares_down_with_diag_1_and_forgets_the_remote() {
        let mut s = Session::new(cfg(10, 10, 3), 7, 0);
        let mut rx = heard(State::Up, State::Up, 0, 10_000, 10_000);
        rx.final_seq = 0;
        s.tick(0, &rx, 0.0);
        // Detection time 3 x max(10 ms, 10 ms) = 30 ms after the last packet.
        assert_eq!(s.deadline(&rx).min(30 * MS), s.deadline(&rx));
        assert_eq!(s.tick(30 * MS, &rx, 0.0).down_seq, None);
        let a = s.tick(30 * MS + 1, &rx, 0.0);
        assert_eq!(a.down_seq, Some(1));
        let p = a.send.expect("sent with the new state");
        assert_eq!((p.state, p.diag, p.your_disc), (State::Down, Diag::ControlDetectionTimeExpired, 0));
        assert_eq!(p.desired_min_tx, 1_000_000, "back to 1 s while not Up");
        let v = s.view(&rx);
        assert_eq!((v.state, v.diag, v.remote_state), (State::Down, Diag::ControlDetectionTimeExpired, State::Down));
        assert_eq!(s.flaps, 2, "up, then down");
        // Declared once; the datapath acknowledges on its next packet.
        assert_eq!(s.tick(40 * MS, &rx, 0.0).down_seq, None);
        rx.down_ack = 1;
        rx.state = State::Down as u8;
        assert_eq!(s.tick(50 * MS, &rx, 0.0).down_seq, None, "Down: no detection");
    }

    #[test]
    fn init_also_times_out_but_down_never_does() {
        let mut s = Session::new(cfg(10, 10, 3), 7, 0);
        let rx = heard(State::Down, State::Init, 0, 1_000_000, 10_000);
        // Remote at 1 s: detection 3 s.
        assert_eq!(s.tick(3000 * MS, &rx, 0.0).down_seq, None);
        assert_eq!(s.tick(3000 * MS + 1, &rx, 0.0).down_seq, Some(1));
        let mut s = Session::new(cfg(10, 10, 3), 7, 0);
        let rx = heard(State::Down, State::Down, 0, 1_000_000, 10_000);
        assert_eq!(s.tick(10_000 * MS, &rx, 0.0).down_seq, None);
    }

    #[test]
    fn echo_advertises_required_min_echo_rx() {
        let mut s = Session::new(Config { echo: true, ..cfg(10, 20, 3) }, 7, 0);
        let p = s.tick(0, &Rx::default(), 0.0).send.unwrap();
        assert_eq!(p.required_min_echo_rx, 20_000);
    }

    #[test]
    fn a_peer_asking_for_no_packets_gets_one_per_second() {
        let mut s = Session::new(cfg(10, 10, 3), 7, 0);
        let rx = heard(State::Up, State::Up, 0, 10_000, 0);
        s.tick(0, &rx, 0.0);
        assert_eq!(s.next_tx_ns, 1000 * MS);
    }
}
