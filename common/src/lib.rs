//! Shared by the XDP datapath (no_std, bpfel-unknown-none), the controller and
//! the tests: wire constants and the `#[repr(C)]` layouts of every BPF map key
//! and value. One definition, so the kernel and userspace cannot drift apart.
#![no_std]

pub mod bfd;
pub mod counters;
pub mod geneve;
pub mod maps;
pub mod wire;
