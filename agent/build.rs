//! `capstan-monitor` is linked as a fixed-address executable (`-no-pie`), the daemon stays
//! PIE. There is one monitor per pod, so its resident size is the per-pod cost, and a PIE
//! spends ~480 KiB of it on `.data.rel.ro`: the loader writes a relocated copy of those
//! pages (vtables, static tables) into every process, where a fixed-address binary maps
//! them clean from the file and shares them. The price is that the monitor's own code is
//! not address-randomised (its libraries, heap and stack still are); it takes requests only
//! from the daemon's unix socket (root-only pod dir), and containers' output is data to it.

fn main() {
    println!("cargo:rustc-link-arg-bin=capstan-monitor=-no-pie");
}
